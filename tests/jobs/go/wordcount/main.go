package main

import (
	"bytes"
	"fmt"
	"strings"

	"edgecloud/job"
)

func init() {
	job.Map(func(line []byte, o job.Object) {
		for _, w := range bytes.FieldsFunc(line, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			job.Emit(strings.ToLower(string(w)), 1)
		}
		if len(line) == 0 {
			fmt.Println("an empty line in", o.Key)
		}
	})
	job.Combine(job.Sum)
	job.Reduce(job.Sum)
}

func main() {}
