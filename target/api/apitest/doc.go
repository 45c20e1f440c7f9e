// Package apitest runs drover-target's real API and volume store in-process
// for tests, with an in-memory stand-in for the iSCSI engine that records
// exports and reports whatever sessions a test adds.
package apitest
