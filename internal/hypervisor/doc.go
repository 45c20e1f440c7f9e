// Package hypervisor talks to the libvirt hosts of a Drover cluster: it keeps
// one connection per host, reads what a host has and runs (its facts), turns
// a VM spec into domain XML and back (disks on the storage box over iSCSI,
// Drover's own facts in the domain's metadata), runs the VM's life cycle and
// its live changes, and moves VMs between hosts.
//
// It is the only package that imports libvirt. Every call that reaches a host
// takes a context and returns when its deadline passes, even when the host
// never answers, so a dead host can slow Drover down but never hang it.
package hypervisor
