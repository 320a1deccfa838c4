module github.com/campaignmesh/campaignmesh

go 1.26

require github.com/campaignmesh/campaignmesh/gen v0.0.0

replace github.com/campaignmesh/campaignmesh/gen => ./gen
