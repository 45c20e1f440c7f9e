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
			// A ReaderAt that cannot tell its size reads the same.
			got, err = Read(readerAtOnly{bytes.NewReader(image)})
			if err != nil {
				t.Fatalf("Read of a written seed through a bare io.ReaderAt: %v", err)
			}
			if got != tt.seed {
				t.Errorf("Read through a bare io.ReaderAt = %+v, want %+v", got, tt.seed)
			}
		})
	}
}

// readerAtOnly hides the Size method of the reader it wraps.
type readerAtOnly struct{ r io.ReaderAt }

func (r readerAtOnly) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }

func TestReadMatchesNamesLikeLinux(t *testing.T) {
	t.Parallel()
	seed := Seed{UserData: "#cloud-config\n", MetaData: "instance-id: x\n"}
	image, err := seed.Image()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"user-data", "meta-data"} {
		at := recordAt(t, image, name)
		copy(image[at+33:], strings.ToUpper(name)+";1")
	}
	got, err := Read(bytes.NewReader(image))
	if err != nil {
		t.Fatalf("Read of a seed with upper-case names: %v", err)
	}
	if got != seed {
		t.Errorf("Read = %+v, want %+v", got, seed)
	}
	for id, want := range map[string]string{
		"user-data;1":       "user-data",
		"META-DATA;1":       "meta-data",
		"network-config":    "network-config",
		"NETWORK-CONFIG.;1": "network-config",
		"user_data;1":       "user_data",
	} {
		if got := fileName(id); got != want {
			t.Errorf("fileName(%q) = %q, want %q", id, got, want)
		}
	}
}

// ISO 9660 places the tests below edit: the primary volume descriptor, the
// root directory record in it, and the fields of a directory record.
const (
	testPVD       = 16 * 2048
	testRootRec   = testPVD + 156
	recExtent     = 2
	recLength     = 10
	testBlockSize = testPVD + 128
)

// putBoth32 writes v as an ISO 9660 both-endian 32-bit number at b[0:8].
func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b[0:4], v)
	binary.BigEndian.PutUint32(b[4:8], v)
}

// rootDirAt is the byte offset of an image's root directory.
func rootDirAt(image []byte) int {
	return int(binary.LittleEndian.Uint32(image[testRootRec+recExtent:])) * 2048
}

// recordAt is the byte offset of the root directory record of the file
// Write named name.
func recordAt(t *testing.T, image []byte, name string) int {
	t.Helper()
	dir := rootDirAt(image)
	for off := dir; off < dir+2048 && image[off] != 0; off += int(image[off]) {
		idLen := int(image[off+32])
		if strings.EqualFold(string(image[off+33:off+33+idLen]), name+";1") {
			return off
		}
	}
	t.Fatalf("no record for %s in the root directory", name)
	return 0
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
	// edit returns a seed's image as edit leaves it.
	edit := func(edit func(image []byte) []byte) []byte {
		image, err := Seed{UserData: "#cloud-config\n", MetaData: "instance-id: x\n", NetworkConfig: "version: 2\n"}.Image()
		if err != nil {
			t.Fatal(err)
		}
		return edit(image)
	}
	tests := []struct {
		name  string
		image []byte
		want  string
	}{
		{name: "an image with a System Use area is refused", image: withSystemUse, want: "System Use"},
		{name: "an empty volume is refused", image: make([]byte, 1<<20), want: "cloud-init seed"},
		{name: "a short read is refused", image: []byte("not an iso"), want: "cloud-init seed"},
		{name: "an image with another label is refused", image: other, want: `label is "config-2"`},
		{
			name: "a root directory of zero-length records holds no seed",
			image: edit(func(image []byte) []byte {
				clear(image[rootDirAt(image) : rootDirAt(image)+2048])
				return image
			}),
			want: "no user-data",
		},
		{
			name: "a 64 KiB root directory of zero-length records holds no seed",
			image: edit(func(image []byte) []byte {
				image = append(image, make([]byte, 1<<20)...)
				putBoth32(image[testRootRec+recLength:], 64<<10)
				clear(image[rootDirAt(image) : rootDirAt(image)+64<<10])
				return image
			}),
			want: "no user-data",
		},
		{
			name: "a System Use entry of length zero is refused",
			image: edit(func(image []byte) []byte {
				// The "." record grows an "SP" entry that says it is 0 bytes.
				dot := rootDirAt(image)
				image[dot] += 4
				copy(image[dot+34:], "SP\x00\x01")
				return image
			}),
			want: "System Use",
		},
		{
			name: "a record shorter than 34 bytes is refused",
			image: edit(func(image []byte) []byte {
				image[recordAt(t, image, "meta-data")] = 20
				return image
			}),
			want: "record of 20 bytes",
		},
		{
			name: "a record whose identifier runs past it is refused",
			image: edit(func(image []byte) []byte {
				image[recordAt(t, image, "meta-data")+32] = 200
				return image
			}),
			want: "identifier runs past",
		},
		{
			name: "a record running past the root directory's end is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[testRootRec+recLength:], 100)
				return image
			}),
			want: "runs past the directory's end",
		},
		{
			name: "a root directory past the image's end is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[testRootRec+recExtent:], 0xfffffff0)
				return image
			}),
			want: "outside the image",
		},
		{
			name: "a root directory running past the image's end is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[testRootRec+recLength:], 60<<10)
				return image
			}),
			want: "outside the image",
		},
		{
			name: "a huge root directory is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[testRootRec+recLength:], 0xffffffff)
				return image
			}),
			want: "root directory is 4294967295 bytes",
		},
		{
			name: "a root directory at the volume descriptors is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[testRootRec+recExtent:], 0)
				return image
			}),
			want: "outside the image",
		},
		{
			name: "a file past the image's end is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[recordAt(t, image, "meta-data")+recExtent:], 1000)
				return image
			}),
			want: "read meta-data: extent at block 1000",
		},
		{
			name: "a file running past the image's end is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[recordAt(t, image, "user-data")+recLength:], 512<<10)
				return image
			}),
			want: "read user-data: extent",
		},
		{
			name: "a huge file is refused",
			image: edit(func(image []byte) []byte {
				putBoth32(image[recordAt(t, image, "network-config")+recLength:], 0xffffffff)
				return image
			}),
			want: "network-config is 4294967295 bytes",
		},
		{
			name: "a file beyond the first 16 MiB is refused",
			image: edit(func(image []byte) []byte {
				image = append(image, make([]byte, 17<<20-len(image))...)
				const block = 16<<20/2048 + 8
				copy(image[block*2048:], "instance-id: x\n")
				putBoth32(image[recordAt(t, image, "meta-data")+recExtent:], block)
				return image
			}),
			want: "outside the image of 16777216 bytes",
		},
		{
			name: "both-endian fields that disagree are refused",
			image: edit(func(image []byte) []byte {
				binary.LittleEndian.PutUint32(image[recordAt(t, image, "meta-data")+recLength:], 3)
				return image
			}),
			want: "both-endian fields disagree",
		},
		{
			name: "a file named twice is refused",
			image: edit(func(image []byte) []byte {
				copy(image[recordAt(t, image, "meta-data")+33:], "user-data;1")
				return image
			}),
			want: "user-data twice",
		},
		{
			name: "a multi-extent file is refused",
			image: edit(func(image []byte) []byte {
				image[recordAt(t, image, "meta-data")+25] |= 0x80
				return image
			}),
			want: "multi-extent",
		},
		{
			name: "a block size other than 2048 is refused",
			image: edit(func(image []byte) []byte {
				binary.LittleEndian.PutUint16(image[testBlockSize:], 512)
				binary.BigEndian.PutUint16(image[testBlockSize+2:], 512)
				return image
			}),
			want: "logical block size is 512",
		},
		{
			name: "a volume descriptor of another version is refused",
			image: edit(func(image []byte) []byte {
				image[testPVD+6] = 2
				return image
			}),
			want: "not an ISO 9660 image",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Read(bytes.NewReader(tt.image))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read = %v, want an error containing %q", err, tt.want)
			}
			// Without a size to go by, Read refuses them too.
			if _, err := Read(readerAtOnly{bytes.NewReader(tt.image)}); err == nil {
				t.Errorf("Read through a bare io.ReaderAt = nil error, want one")
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
