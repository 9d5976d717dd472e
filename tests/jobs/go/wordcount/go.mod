module wordcount

go 1.24

require edgecloud/job v0.0.0

replace edgecloud/job => ../../../../sdk/go
