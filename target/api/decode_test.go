package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// The daemon decodes PATCH /v1/volumes/{name} into a type of its own, to
// tell an absent "chap" from "chap": null; whatever the shared wire type
// says must reach it intact.
func TestEveryVolumePatchTheWireTypeSaysIsDecodedIntact(t *testing.T) {
	t.Parallel()
	size := int64(8)
	inits := []string{"iqn.2000-01.lab:alpha", "iqn.2000-01.lab:beta"}
	chap := &wire.CHAP{User: "vm", Secret: "0123456789ab", MutualUser: "tgt", MutualSecret: "abcdefabcdef"}
	chapJSON, err := json.Marshal(chap)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		body wire.UpdateVolumeRequest
		// what the decoder should make of "chap"
		wantCHAPSet bool
		wantCHAP    *wire.CHAP
	}{
		{name: "a new size", body: wire.UpdateVolumeRequest{SizeMiB: &size}},
		{name: "new initiators", body: wire.UpdateVolumeRequest{Initiators: &inits}},
		{name: "new CHAP credentials", body: wire.UpdateVolumeRequest{CHAP: chapJSON}, wantCHAPSet: true, wantCHAP: chap},
		{name: "CHAP removed", body: wire.UpdateVolumeRequest{CHAP: json.RawMessage("null")}, wantCHAPSet: true},
		{name: "everything at once", body: wire.UpdateVolumeRequest{SizeMiB: &size, Initiators: &inits, CHAP: chapJSON}, wantCHAPSet: true, wantCHAP: chap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			got, err := api.DecodeUpdateVolume(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("DecodeUpdateVolume(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got.SizeMiB, tc.body.SizeMiB) || !reflect.DeepEqual(got.Initiators, tc.body.Initiators) {
				t.Errorf("DecodeUpdateVolume(%s): size_mib %v, initiators %v; want %v, %v", b, got.SizeMiB, got.Initiators, tc.body.SizeMiB, tc.body.Initiators)
			}
			if got.CHAP.Set != tc.wantCHAPSet || !reflect.DeepEqual(got.CHAP.Value, tc.wantCHAP) {
				t.Errorf("DecodeUpdateVolume(%s): chap set %v, %+v; want %v, %+v", b, got.CHAP.Set, got.CHAP.Value, tc.wantCHAPSet, tc.wantCHAP)
			}
		})
	}
}
