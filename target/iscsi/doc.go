// Package iscsi serves drover volumes over iSCSI: one target per volume, each
// exporting its sparse raw file as LUN 0, with per-volume initiator allow-lists,
// CHAP and Prometheus metrics. It owns the iSCSI session layer (listener, login,
// CHAP, PDUs) and uses github.com/gostor/gotgt only for SCSI command emulation;
// it is the one package in the module that may import gotgt.
package iscsi
