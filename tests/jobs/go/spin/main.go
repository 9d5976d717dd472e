// A job that never ends: it must stop at the instruction limit.
package main

import "edgecloud/job"

func init() {
	job.Map(func(record []byte, o job.Object) {
		n := 0
		for {
			n++
		}
	})
}

func main() {}
