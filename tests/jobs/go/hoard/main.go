// A job that allocates without end: it must stop at the memory limit.
package main

import "edgecloud/job"

var kept [][]byte

func init() {
	job.Map(func(record []byte, o job.Object) {
		for {
			b := make([]byte, 1<<20)
			b[0] = record[0]
			kept = append(kept, b)
		}
	})
}

func main() {}
