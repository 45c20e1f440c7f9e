// Package cloudinit builds cloud-init NoCloud seed images: small ISO 9660
// images labelled "cidata" holding user-data, meta-data and, optionally,
// network-config. Drover stores a VM's seed as a volume on the storage box
// and attaches it as a read-only CD-ROM, so the seed follows the VM when it
// moves between hosts.
package cloudinit
