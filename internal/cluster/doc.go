// Package cluster is what the Drover cluster does, in the words of the
// domain: it surveys the hosts, decides under one lock where each VM goes,
// books the decision and carries it out (create, change, move, restart), and
// cuts and exports whole-VM backups. It defines the small interfaces it needs
// of the hypervisors and the storage box (*hypervisor.Pool and
// *storage.Client are the real ones) and knows nothing of Terraform.
package cluster
