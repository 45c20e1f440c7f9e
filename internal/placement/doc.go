// Package placement decides which host each Drover VM runs on. It is a pure
// function of the cluster it is given — hosts with their capacity and state,
// VMs with their demands and constraints — with no Terraform or libvirt in it,
// and the same input always gives the same answer, so a plan made now is the
// plan applied later.
//
// A decision runs as a pipeline: feasibility checks filter the hosts and record
// why each rejected host was rejected, rankers score the rest from 0 to 100,
// and the best score wins, ties going to the host whose name sorts first.
package placement
