module edgecloud/job

go 1.24
