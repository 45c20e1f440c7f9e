package iscsi

import (
	"os"
	"testing"
	"time"
)

// TestServeForDebugging serves one volume on $DROVER_ISCSI_SERVE for manual
// runs of initiator tools; it does nothing otherwise.
func TestServeForDebugging(t *testing.T) {
	addr := os.Getenv("DROVER_ISCSI_SERVE")
	if addr == "" {
		t.Skip("set DROVER_ISCSI_SERVE=127.0.0.1:PORT to serve a volume for manual testing")
	}
	e, err := New(Config{Listen: addr, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ex := Export{Name: "debug", IQN: "iqn.2026-11.io.drover:debug", Path: newBackingFile(t, t.TempDir(), 64<<20),
		Initiators: []string{testCUInitiator, testCUInitiator2, testInitiator}}
	if err := e.Add(ex); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Minute)
}
