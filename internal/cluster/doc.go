// Package cluster is what the Drover cluster does, in the words of the
// domain: it surveys the hosts, decides under one lock where each VM goes,
// books the decision and carries it out (create, change, move, restart), and
// cuts and exports whole-VM backups. It defines the small interfaces it needs
// of the hypervisors and the storage box (*hypervisor.Pool and
// *storage.Client are the real ones) and knows nothing of Terraform.
//
// What must change, where, and the carrying out are kept apart: survey.go
// (the cluster as it is) and decide.go (plans and their reasons, with the
// placement engine) decide; placer.go books decisions and bounds moves per
// host; vm.go, move.go, seed.go, backup.go and export.go carry them out. A
// host that fails (fence it at the storage box, then restart its VMs
// elsewhere) is one more decision in decide.go and one more executor beside
// move.go, with the storage side's fences behind an interface of its own.
package cluster
