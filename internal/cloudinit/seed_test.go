package cloudinit

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/kdomanski/iso9660"
)

// readISO returns the label and the root files of an ISO 9660 image.
func readISO(t *testing.T, image []byte) (string, map[string]string) {
	t.Helper()
	img, err := iso9660.OpenImage(bytes.NewReader(image))
	if err != nil {
		t.Fatalf("the image does not open as ISO 9660: %v", err)
	}
	label, err := img.Label()
	if err != nil {
		t.Fatal(err)
	}
	root, err := img.RootDir()
	if err != nil {
		t.Fatal(err)
	}
	children, err := root.GetChildren()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range children {
		if f.IsDir() {
			continue
		}
		b, err := io.ReadAll(f.Reader())
		if err != nil {
			t.Fatalf("read %s: %v", f.Name(), err)
		}
		files[f.Name()] = string(b)
	}
	return label, files
}

func TestSeedImage(t *testing.T) {
	t.Parallel()
	const (
		userData = "#cloud-config\nhostname: web1\nruncmd:\n  - [echo, \"hello; world\"]\n"
		metaData = "instance-id: 6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a11\nlocal-hostname: web1\n"
		network  = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
	)
	tests := []struct {
		name string
		seed Seed
		want map[string]string
	}{
		{
			name: "a seed with network config holds all three files",
			seed: Seed{UserData: userData, MetaData: metaData, NetworkConfig: network},
			want: map[string]string{"user-data": userData, "meta-data": metaData, "network-config": network},
		},
		{
			name: "a seed without network config leaves that file out",
			seed: Seed{UserData: userData, MetaData: metaData},
			want: map[string]string{"user-data": userData, "meta-data": metaData},
		},
		{
			name: "a seed with meta-data only still has an empty user-data",
			seed: Seed{MetaData: metaData},
			want: map[string]string{"user-data": "", "meta-data": metaData},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			image, err := tt.seed.Image()
			if err != nil {
				t.Fatal(err)
			}
			if len(image)%2048 != 0 {
				t.Errorf("image is %d bytes, want whole 2048-byte sectors", len(image))
			}
			label, files := readISO(t, image)
			if label != Label {
				t.Errorf("label = %q, want %q", label, Label)
			}
			if len(files) != len(tt.want) {
				t.Errorf("files = %v, want %d files", keys(files), len(tt.want))
			}
			for name, want := range tt.want {
				got, ok := files[name]
				switch {
				case !ok:
					t.Errorf("file %s is missing (have %v)", name, keys(files))
				case got != want:
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestEmptySeedIsRefused(t *testing.T) {
	t.Parallel()
	_, err := Seed{NetworkConfig: "version: 2\n"}.Image()
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("Image of a seed without user-data and meta-data = %v, want an error saying they are empty", err)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestReadReturnsTheSeedWritten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		seed Seed
	}{
		{
			name: "all three files come back as written",
			seed: Seed{
				UserData:      "#cloud-config\nhostname: web1\n",
				MetaData:      "instance-id: web1-id\nlocal-hostname: web1\n",
				NetworkConfig: "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
			},
		},
		{
			name: "meta-data alone comes back with empty user-data and network-config",
			seed: Seed{MetaData: "instance-id: web1-id\n"},
		},
		{
			name: "user-data alone comes back with empty meta-data",
			seed: Seed{UserData: "#cloud-config\n"},
		},
		{
			name: "a file larger than a sector comes back whole",
			seed: Seed{MetaData: "instance-id: big\n", UserData: "#cloud-config\n" + strings.Repeat("# padding line\n", 1000)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			image, err := tt.seed.Image()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Read(bytes.NewReader(image))
			if err != nil {
				t.Fatalf("Read of a written seed: %v", err)
			}
			if got != tt.seed {
				t.Errorf("Read = %+v, want %+v", got, tt.seed)
			}
		})
	}
}

func TestReadRefusesWhatIsNotASeed(t *testing.T) {
	t.Parallel()
	other := func() []byte {
		iw, err := iso9660.NewWriter()
		if err != nil {
			t.Fatal(err)
		}
		defer iw.Cleanup()
		if err := iw.AddFile(strings.NewReader("instance-id: x\n"), "meta-data"); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := iw.WriteTo(&buf, "config-2"); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	// A seed whose root "." record grows a System Use area, as Rock Ridge
	// images have.
	withSystemUse, err := Seed{MetaData: "instance-id: x\n"}.Image()
	if err != nil {
		t.Fatal(err)
	}
	rootAt := int(binary.LittleEndian.Uint32(withSystemUse[16*2048+156+2:])) * 2048
	withSystemUse[rootAt] += 4
	tests := []struct {
		name  string
		image []byte
		want  string
	}{
		{name: "an image with a System Use area is refused", image: withSystemUse, want: "System Use"},
		{name: "an empty volume is refused", image: make([]byte, 1<<20), want: "cloud-init seed"},
		{name: "a short read is refused", image: []byte("not an iso"), want: "cloud-init seed"},
		{name: "an image with another label is refused", image: other, want: `label is "config-2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Read(bytes.NewReader(tt.image))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzRead feeds Read what a storage volume may hold: it must return an
// error, never panic.
func FuzzRead(f *testing.F) {
	image, err := Seed{UserData: "#cloud-config\n", MetaData: "instance-id: x\n", NetworkConfig: "version: 2\n"}.Image()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(image)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Read(bytes.NewReader(b))
	})
}
