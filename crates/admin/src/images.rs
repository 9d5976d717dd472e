//! Container images over HTTP (`edgecloud image`): import a `docker save` tarball or
//! an OCI layout (as a tar) streamed in the body, list, inspect, remove.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use images::{ImageError, ImageStore};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::AdminState;
use crate::error::problem;
use crate::session::Principal;

/// An image-store error as an answer: a status and a body that says what to do;
/// archive errors answer as the archive's own routes do.
fn image_problem(e: ImageError) -> Response {
    use ImageError as E;
    let e = match e {
        E::Archive(a) => return crate::ApiError(a).into_response(),
        other => other,
    };
    let (status, code) = match &e {
        E::NotAnImage(_) => (StatusCode::BAD_REQUEST, "InvalidImage"),
        E::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "DigestMismatch"),
        E::HostileLayer { .. } => (StatusCode::BAD_REQUEST, "RefusedLayer"),
        E::InvalidName(_) => (StatusCode::BAD_REQUEST, "InvalidName"),
        E::NoSuchImage(_) => (StatusCode::NOT_FOUND, "NoSuchImage"),
        E::Ambiguous(_) => (StatusCode::CONFLICT, "AmbiguousImage"),
        E::Registry(_) => (StatusCode::BAD_GATEWAY, "RegistryError"),
        E::Archive(_) | E::Io(_) | E::Corrupt { .. } | E::Task(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "image request failed");
    }
    problem(status, code, e.to_string())
}

fn store_of(s: &AdminState) -> Result<&ImageStore, Response> {
    s.images.as_ref().ok_or_else(|| {
        problem(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "this node keeps no images".into(),
        )
    })
}

#[derive(Deserialize)]
pub(crate) struct ImportQuery {
    /// Name the (single) image in the file.
    tag: Option<String>,
}

/// `POST /v1/images`: the body is spooled to a file under the data directory (a
/// `docker save` tarball may list its manifest last, and layers are read by offset),
/// then imported.
pub(crate) async fn import(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Response {
    let store = match store_of(&s) {
        Ok(st) => st.clone(),
        Err(r) => return r,
    };
    let spool = match spool(&s, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match store
        .import(spool.path(), q.tag.as_deref(), Some(who.actor()))
        .await
    {
        Ok(done) => (StatusCode::CREATED, Json(done)).into_response(),
        Err(e) => image_problem(e),
    }
}

/// Writes the request body to a temporary file (removed when the answer is sent).
async fn spool(s: &AdminState, body: Body) -> Result<tempfile::NamedTempFile, Response> {
    let internal = |what: &str, e: std::io::Error| {
        tracing::error!("spooling an image upload: {what}: {e}");
        image_problem(ImageError::Io(std::io::Error::other(format!(
            "{what}: {e}"
        ))))
    };
    let dir = s.archive.config().data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| internal("creating DATA/tmp", e))?;
    let tmp = tempfile::Builder::new()
        .prefix("image-upload-")
        .tempfile_in(&dir)
        .map_err(|e| internal("creating a spool file", e))?;
    let std_file = tmp
        .reopen()
        .map_err(|e| internal("opening the spool file", e))?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| {
            let why = format!("the upload was cut short: {e}");
            problem(StatusCode::BAD_REQUEST, "IncompleteBody", why)
        })?;
        file.write_all(&piece)
            .await
            .map_err(|e| internal("writing the spool file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("writing the spool file", e))?;
    Ok(tmp)
}

/// `GET /v1/images`'s answer.
#[derive(Serialize)]
pub(crate) struct Listing {
    images: Vec<images::Image>,
    usage: images::Usage,
}

/// What `POST /v1/image-pulls` takes.
#[derive(Deserialize)]
pub(crate) struct PullRequest {
    /// `NAME[:TAG][@sha256:DIGEST]`; Docker Hub when no registry host is named.
    reference: String,
    /// A login for the registry.
    username: Option<String>,
    password: Option<String>,
    /// Plain HTTP (a registry on the local network without TLS).
    #[serde(default)]
    insecure: bool,
}

/// `POST /v1/image-pulls`: pulls an image from its registry into the store.
pub(crate) async fn pull(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Json(req): Json<PullRequest>,
) -> Response {
    let store = match store_of(&s) {
        Ok(st) => st.clone(),
        Err(r) => return r,
    };
    let login = req.username.map(|username| ::images::registry::Login {
        username,
        password: req.password.unwrap_or_default(),
    });
    match store
        .pull(&req.reference, login, req.insecure, Some(who.actor()))
        .await
    {
        Ok(done) => (StatusCode::CREATED, Json(done)).into_response(),
        Err(e) => image_problem(e),
    }
}

/// `GET /v1/images`: every image, newest first, and what the store holds.
pub(crate) async fn list(State(s): State<AdminState>) -> Response {
    let store = match store_of(&s) {
        Ok(st) => st,
        Err(r) => return r,
    };
    let listing = async {
        Ok::<_, ImageError>(Listing {
            images: store.list().await?,
            usage: store.usage().await?,
        })
    };
    match listing.await {
        Ok(l) => Json(l).into_response(),
        Err(e) => image_problem(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct InspectQuery {
    /// Also list the image's root file system.
    #[serde(default)]
    files: bool,
}

/// `GET /v1/images/{reference}`'s answer.
#[derive(Serialize)]
pub(crate) struct Inspected {
    #[serde(flatten)]
    image: images::Image,
    #[serde(skip_serializing_if = "Option::is_none")]
    tree: Option<Vec<images::layer::Entry>>,
}

/// `GET /v1/images/{reference}`: an image by name, id or id prefix.
pub(crate) async fn inspect(
    State(s): State<AdminState>,
    Path(reference): Path<String>,
    Query(q): Query<InspectQuery>,
) -> Response {
    let store = match store_of(&s) {
        Ok(st) => st,
        Err(r) => return r,
    };
    let found = async {
        let image = store.find(&reference).await?;
        let tree = match q.files {
            true => Some(store.tree(&image).await?.into_entries()),
            false => None,
        };
        Ok::<_, ImageError>(Inspected { image, tree })
    };
    match found.await {
        Ok(i) => Json(i).into_response(),
        Err(e) => image_problem(e),
    }
}

/// `DELETE /v1/images/{reference}`: removes a name, or the image and what only it held.
pub(crate) async fn remove(
    State(s): State<AdminState>,
    Extension(who): Extension<Principal>,
    Path(reference): Path<String>,
) -> Response {
    let store = match store_of(&s) {
        Ok(st) => st,
        Err(r) => return r,
    };
    // An image a container was made from stays (as `docker rmi` refuses): its files
    // are what the container would start from again.
    if let Some(containers) = &s.containers {
        let image = match store.find(&reference).await {
            Ok(i) => i,
            Err(e) => return image_problem(e),
        };
        let untag_only = images::reference::canonical(&reference)
            .is_ok_and(|n| image.names.contains(&n) && image.names.len() > 1);
        let users: Vec<String> = containers
            .list(true)
            .into_iter()
            .filter(|c| c.image_id == image.id)
            .map(|c| c.name.unwrap_or_else(|| c.id[..12].to_string()))
            .collect();
        if !untag_only && !users.is_empty() {
            let why = format!(
                "image {reference} is used by container {}: remove it first (`edgecloud container rm`)",
                users.join(", ")
            );
            return problem(StatusCode::CONFLICT, "ImageInUse", why);
        }
    }
    match store.remove(&reference, Some(who.actor())).await {
        Ok(r) => {
            if let (Some(id), Some(containers)) = (&r.deleted, &s.containers)
                && let Err(e) = containers.forget_image(id).await
            {
                tracing::warn!("removing the unpacked copy of {id}: {e}");
            }
            Json(r).into_response()
        }
        Err(e) => image_problem(e),
    }
}
