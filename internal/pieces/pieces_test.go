package pieces

import "testing"

// TestGetPut: a piece is empty with Size bytes' capacity, whether new or
// given back after use, even as a shorter slice of itself.
func TestGetPut(t *testing.T) {
	b := Get()
	if len(b) != 0 || cap(b) != Size {
		t.Fatalf("Get = len %d cap %d, want 0 and %d", len(b), cap(b), Size)
	}
	b = append(b, "some bytes"...)
	Put(b[:3])
	for range 3 {
		if c := Get(); len(c) != 0 || cap(c) != Size {
			t.Fatalf("Get after Put = len %d cap %d, want 0 and %d", len(c), cap(c), Size)
		}
	}
}
