// Package hypervisor talks to the libvirt hosts of a Drover cluster: it keeps
// one connection per host, reads what a host has and runs (its facts), builds
// the domain XML of a VM and moves running VMs between hosts.
//
// It is the only package that imports libvirt. Every call that reaches a host
// takes a context and returns when its deadline passes, even when the host
// never answers, so a dead host can slow Drover down but never hang it.
package hypervisor
