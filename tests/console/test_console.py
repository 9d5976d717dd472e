"""The web console against a real node: its security rules over plain HTTP (httpx), then
every page clicked through in headless Chromium (Debian's, driven by Playwright), with
screenshots saved as artefacts and accessibility checked by axe-core."""
import hashlib
import os
import re
import subprocess
import time

import httpx
import pytest

from conftest import BIN, Node, console_login
from conftest import assert_accessible as accessible
from conftest import screenshot as shot


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("console"))
    n.token = (n.data / "admin.token").read_text().strip()
    yield n
    n.stop()


def admin(node):
    return httpx.Client(base_url=node.admin, headers={"Authorization": f"Bearer {node.token}"}, timeout=30)


def session(node, **credentials):
    """An httpx client logged in through /v1/session; returns (client, login answer)."""
    c = httpx.Client(base_url=node.admin, timeout=30)
    r = c.post("/v1/session", json=credentials)
    assert r.status_code == 200, r.text
    return c, r


def test_pages_and_answers_carry_the_security_headers(node):
    r = httpx.get(f"{node.admin}/console/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{node.admin}/").headers["location"] == "/console/"
    # The script and style are served with their types; nothing else under /console.
    assert httpx.get(f"{node.admin}/console/console.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{node.admin}/console/console.css").headers["content-type"].startswith("text/css")
    assert httpx.get(f"{node.admin}/console/../admin.token").status_code == 404
    # API answers: no caching, a CSP that runs nothing (an HTML object stays inert).
    a = admin(node)
    assert a.put("/v1/buckets/headers").status_code == 201
    page = b"<script>alert(document.cookie)</script>"
    assert a.put("/v1/objects/headers/x.html", content=page, headers={"content-type": "text/html"}).status_code == 200
    got = a.get("/v1/objects/headers/x.html")
    assert got.content == page
    assert "sandbox" in got.headers["content-security-policy"]
    assert got.headers["cache-control"] == "no-store"


def test_sessions_need_the_cookie_and_the_csrf_token_and_end(node):
    assert httpx.get(f"{node.admin}/v1/buckets").status_code == 401
    wrong = httpx.post(f"{node.admin}/v1/session", json={"token": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "Unauthorized"
    assert httpx.post(f"{node.admin}/v1/session", content=b"{not json").status_code == 400
    c, r = session(node, token=node.token)
    cookie = r.headers["set-cookie"]
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie, cookie
    assert node.token not in cookie and node.token not in r.text
    csrf = r.json()["csrf"]
    assert r.json()["admin"] is True and len(csrf) == 64
    assert c.get("/v1/buckets").status_code == 200
    # A change needs the CSRF token, from our own origin.
    refused = c.put("/v1/buckets/nocsrf")
    assert refused.status_code == 403 and refused.json()["error"] == "CsrfCheckFailed"
    assert c.put("/v1/buckets/nocsrf", headers={"x-csrf-token": "0" * 64}).status_code == 403
    foreign = c.put("/v1/buckets/nocsrf", headers={"x-csrf-token": csrf, "origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert c.put("/v1/buckets/withcsrf", headers={"x-csrf-token": csrf, "origin": node.admin}).status_code == 201
    assert c.get("/v1/session").json()["csrf"] == csrf
    # Logging out ends the session on the server, not just in the browser.
    stolen = dict(c.cookies)
    assert c.delete("/v1/session", headers={"x-csrf-token": csrf}).status_code == 204
    replay = httpx.get(f"{node.admin}/v1/buckets", cookies=stolen)
    assert replay.status_code == 401 and replay.json()["error"] == "SessionExpired"


def test_an_access_key_session_has_only_its_grants(node):
    a = admin(node)
    for b in ("granted", "private"):
        assert a.put(f"/v1/buckets/{b}").status_code == 201
    key = a.post("/v1/keys", json={"name": "console reader", "buckets": {"granted": "read"}}).json()
    assert httpx.post(f"{node.admin}/v1/session",
                      json={"access_key": key["access_key"], "secret": "wrong"}).status_code == 401
    c, r = session(node, access_key=key["access_key"], secret=key["secret"])
    info = r.json()
    assert info["user"] == key["access_key"] and info["admin"] is False
    h = {"x-csrf-token": info["csrf"]}
    assert [b["name"] for b in c.get("/v1/buckets").json()] == ["granted"]
    assert c.get("/v1/list/granted").status_code == 200
    for method, path in [("GET", "/v1/list/private"), ("GET", "/v1/keys"), ("GET", "/v1/cluster"),
                         ("POST", "/v1/scrub"), ("PUT", "/v1/objects/granted/x"), ("PUT", "/v1/buckets/mine")]:
        got = c.request(method, path, headers=h)
        assert got.status_code == 403, (method, path, got.text)
        assert got.json()["error"] == "AccessDenied"
    # A grant takes effect at once, and so does deleting the key.
    a.put(f"/v1/keys/{key['access_key']}/buckets/granted", json={"permission": "write"})
    put = c.put("/v1/objects/granted/x", content=b"hello", headers=h)
    assert put.status_code == 200
    # A writer leaves a delete marker but cannot erase a version for good.
    erase = c.delete(f"/v1/objects/granted/x?version={put.json()['version_id']}", headers=h)
    assert erase.status_code == 403
    assert c.delete("/v1/objects/granted/x", headers=h).json()["delete_marker"] is True
    assert c.get(f"/v1/objects/granted/x?version={put.json()['version_id']}").content == b"hello"
    assert a.delete(f"/v1/keys/{key['access_key']}").status_code == 204
    assert c.get("/v1/list/granted").status_code == 401


# ---------- in the browser ----------

def login_with_keyboard(page, node):
    page.goto(f"{node.admin}/")
    page.wait_for_selector("#login:not([hidden])")
    accessible(page, "login")
    shot(page, "01-login")
    console_login(page, node.admin, node.token)


def test_the_console_clicked_through_in_chromium(node, browser, tmp_path):
    errors = []
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    login_with_keyboard(page, node)
    # From here on nothing fails in the page (before login, the session check's 401 is
    # the expected answer).
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    # The cookie is HttpOnly: the page's script cannot read it.
    assert page.evaluate("document.cookie") == ""

    # Cluster (one node): policy and what it survives.
    page.click("nav >> text=Cluster")
    page.wait_for_selector("#survives")
    view = admin(node).get("/v1/cluster").json()
    assert page.inner_text("#survives") == view["survives"]
    assert page.locator("tr[data-node]").count() == len(view["status"]["nodes"]) == 1
    accessible(page, "cluster")
    shot(page, "02-cluster")

    # Buckets: create one through the form.
    page.click("nav >> text=Buckets")
    page.fill("#new-bucket", "photos")
    page.click("text=Create bucket")
    page.wait_for_selector("a:text-is('photos')")
    accessible(page, "buckets")
    shot(page, "03-buckets")

    # Access policy: the example makes objects public; S3 then serves them anonymously.
    page.click("a[aria-label='Access policy of photos']")
    page.click("text=Fill in: everyone may read objects")
    page.click("text=Save policy")
    page.wait_for_selector("#policy-state:text-is('This bucket has a policy.')")
    assert "PublicRead" in admin(node).get("/v1/buckets/photos/policy").json()["policy"]
    page.fill("#policy-text", '{"Statement": []}')
    page.click("text=Save policy")
    page.wait_for_selector("#flash:text-matches('policy has no Statement')")
    errors.remove("Failed to load resource: the server responded with a status of 400 (Bad Request)")
    accessible(page, "policy")
    shot(page, "03b-policy")
    page.click("text=Back to the buckets")

    # Object browser: upload with progress, then a second version.
    page.click("a:text-is('photos')")
    page.wait_for_selector("#upload-files")
    first = tmp_path / "report.txt"
    first.write_bytes(b"first version\n" * 1000)
    page.set_input_files("#upload-files", str(first))
    # Record what the progress bar shows while the upload runs.
    page.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver(() => window.progressSeen.push(
            Number(document.getElementById('upload-progress').value)))
          .observe(document.getElementById('upload-progress'), {attributes: true});
    }""")
    page.click("button:text-is('Upload')")
    page.wait_for_selector("th:text-is('report.txt')")
    seen = page.evaluate("window.progressSeen")
    assert seen and seen[-1] == 100, seen
    assert page.inner_text("#flash") == "Uploaded report.txt."
    shot(page, "04-uploaded")
    time.sleep(1.1)  # versions a second apart, so the slider can tell them apart
    between = page.evaluate("new Date().toISOString()")
    time.sleep(1.1)
    second = tmp_path / "second" / "report.txt"
    second.parent.mkdir()
    second.write_bytes(os.urandom(3 * 1024 * 1024))  # big enough for several progress events
    page.set_input_files("#upload-files", str(second))
    page.click("button:text-is('Upload')")
    page.wait_for_selector("#flash:text-matches('^Uploaded')")
    page.wait_for_selector("td:text-is('3.0 MiB')")

    # The policy made it public: a plain anonymous GET on the S3 port reads it.
    assert httpx.get(f"{node.endpoint}/photos/report.txt").content == second.read_bytes()

    # Download the latest version and compare bytes.
    with page.expect_download() as d:
        page.click("a[aria-label='Download report.txt']")
    saved = tmp_path / "downloaded"
    d.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()

    # Delete: a delete marker; the versions view shows it and both versions.
    page.once("dialog", lambda dlg: dlg.accept())
    page.click("button[aria-label='Delete report.txt']")
    page.wait_for_selector("#empty")
    page.click("text=Show versions and delete markers")
    page.wait_for_selector("td:text-is('delete marker')")
    assert page.locator("a[aria-label^='Download report.txt version']").count() == 2
    accessible(page, "versions")
    shot(page, "05-versions")

    # Time slider: as of the moment between the two uploads, the first version is back.
    page.click("text=Hide old versions")
    page.wait_for_selector("text=Show versions and delete markers")
    # Dragged to the left end (the bucket's creation): nothing was there yet.
    page.evaluate("""() => {
        const s = document.getElementById('as-of');
        s.value = 0;
        s.dispatchEvent(new Event('change'));
    }""")
    # The latest page is empty too (report.txt is deleted): wait for the past's own words.
    page.wait_for_selector("text=Nothing was here at that time.")
    assert "as of" in page.inner_text("#as-of-text")
    page.goto(page.url.split("?")[0] + "?as_of=" + between)
    page.wait_for_selector("th:text-is('report.txt')")
    assert page.inner_text("tbody td.num") == "13.7 KiB"
    # Keyboard: the slider moves with the arrow keys and says where it is.
    page.focus("#as-of")
    page.keyboard.press("End")
    page.wait_for_selector("#empty")  # now: deleted again
    accessible(page, "time-slider")
    shot(page, "06-time-slider")
    with page.expect_download() as d:
        page.goto(page.url.split("#")[0] + "#/objects/photos?versions=1")
        page.click("a[aria-label^='Download report.txt version'] >> nth=1")
    d.value.save_as(saved)
    assert saved.read_bytes() == first.read_bytes()

    # Access keys: create one, the secret shown once, then a grant.
    page.click("nav >> text=Access keys")
    page.fill("#key-name", "laptop backup")
    page.click("text=Create key")
    page.wait_for_selector("#secret-value")
    assert len(page.inner_text("#secret-value")) >= 20
    new_key = page.inner_text("#new-key-id")
    assert page.input_value("#grant-key") == new_key
    page.select_option("#grant-bucket", "photos")
    page.select_option("#grant-permission", "write")
    page.click("button:text-is('Grant')")
    page.wait_for_selector("td:text-is('photos: write')")
    accessible(page, "keys")
    shot(page, "07-keys")

    # Jobs: the example word count runs over a bucket; its result is downloadable.
    a = admin(node)
    a.put("/v1/buckets/corpus")
    a.put("/v1/objects/corpus/texts/a.txt", content=first.read_bytes())
    page.click("nav >> text=Jobs")
    page.select_option("#job-bucket", "corpus")
    page.fill("#job-output", "results/words.jsonl")
    page.click("button:text-is('Run job')")
    page.wait_for_selector("tr[data-job] .ok:text-is('succeeded')", timeout=60000)
    assert page.locator("a:text-matches('^results/words.jsonl')").count() == 1
    words = a.get("/v1/objects/corpus/results/words.jsonl").text
    assert '{"key":"first","value":1000}' in words, words[:300]
    accessible(page, "jobs")
    shot(page, "07b-jobs")

    # Repair and scrub: a scrub runs and reports.
    page.click("nav >> text=Repair and scrub")
    page.click("text=Scrub now")
    page.wait_for_selector("#flash:text-matches('^Scrub done')")
    page.wait_for_selector("#scrub-state .ok")
    accessible(page, "repair")
    shot(page, "08-repair")

    # Ledger: the browser verifies the object's first version itself.
    page.goto(page.url.split("#")[0] + "#/objects/photos?versions=1")
    page.click("a[aria-label='Verify report.txt in the ledger'] >> nth=1")
    page.wait_for_selector("#proof-verdict:text-matches('^(Verified|Not verified)')")
    assert page.inner_text("#proof-verdict").startswith("Verified"), page.inner_text("main")
    assert page.inner_text("#proof-verdict").startswith("Verified")
    assert page.locator("#proof-report li.bad").count() == 0
    assert page.locator("#proof-report li.ok").count() == 4
    accessible(page, "ledger")
    shot(page, "09-ledger")
    # A wrong public key is caught.
    page.fill("#ledger-key", "someone+00000000+AQ" + "A" * 42 + "=")
    page.click("text=Verify in this browser")
    page.wait_for_selector("#proof-verdict.bad")

    # Logging out shows the login form; the old cookie no longer works.
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    assert not errors, errors
    ctx.close()


def test_keyboard_alone_reaches_every_section(node, browser):
    page = browser.new_page()
    login_with_keyboard(page, node)
    page.wait_for_selector("#page h1")
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent.trim()"))
    for section in ("Cluster", "Buckets", "Jobs", "Access keys", "Repair and scrub", "Ledger", "Log out"):
        assert section in reached, reached
    # Enter on a focused link follows it.
    page.focus("nav >> text=Ledger")
    page.keyboard.press("Enter")
    page.wait_for_selector("#checkpoint")
    page.close()


def test_an_access_key_sees_only_its_buckets_in_the_browser(node, browser):
    a = admin(node)
    a.put("/v1/buckets/shared")
    key = a.post("/v1/keys", json={"name": "viewer", "buckets": {"shared": "read"}}).json()
    a.put("/v1/objects/shared/hello.txt", content=b"hello")
    page = browser.new_page()
    page.goto(f"{node.admin}/console/")
    page.fill("#access-key", key["access_key"])
    page.fill("#secret", key["secret"])
    page.click("text=Log in with the key")
    page.wait_for_selector("a:text-is('shared')")
    for hidden in ("Cluster", "Jobs", "Access keys", "Repair and scrub"):
        assert not page.locator(f"nav >> text={hidden}").is_visible()
    assert page.locator("a:text-is('photos')").count() == 0
    page.click("a:text-is('shared')")
    page.wait_for_selector("th:text-is('hello.txt')")
    # Read-only: no upload form, no delete buttons, and the server refuses a write anyway.
    assert page.locator("#upload-files").count() == 0
    assert page.locator("button.danger").count() == 0
    shot(page, "10-key-session")
    status = page.evaluate("""async () => {
        const s = await (await fetch('/v1/session')).json();
        const r = await fetch('/v1/objects/shared/no.txt', {method: 'PUT', body: 'x',
                              headers: {'X-CSRF-Token': s.csrf}});
        return r.status;
    }""")
    assert status == 403
    page.close()


def test_cli_token_still_works_next_to_sessions(node):
    out = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, "bucket", "list"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\bphotos\b", out.stdout)
