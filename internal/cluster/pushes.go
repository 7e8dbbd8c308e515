package cluster

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/meshcast/meshcast/internal/streamname"
)

// MaxPushesRecord bounds a stream's pushes record (Registry.SetPushes).
const MaxPushesRecord = 64 << 10

func checkPushes(name streamname.Name, rec []byte) error {
	if len(rec) > MaxPushesRecord {
		return fmt.Errorf("cluster: set pushes of %s: %d bytes, at most %d", name, len(rec), MaxPushesRecord)
	}
	return nil
}

// SetPushes implements Registry.
func (m *Memory) SetPushes(_ context.Context, name streamname.Name, rec []byte) error {
	if err := checkPushes(name, rec); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(rec) == 0 {
		delete(m.pushes, name)
	} else {
		m.pushes[name] = append([]byte(nil), rec...)
	}
	return nil
}

// Pushes implements Registry.
func (m *Memory) Pushes(_ context.Context, name streamname.Name) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec, ok := m.pushes[name]; ok {
		return append([]byte(nil), rec...), nil
	}
	return nil, nil
}

// pushesKey holds a stream's pushes record, with no expiry.
func (r *Redis) pushesKey(name streamname.Name) string { return r.prefix + "pushes:" + string(name) }

// SetPushes implements Registry.
func (r *Redis) SetPushes(ctx context.Context, name streamname.Name, rec []byte) error {
	if err := checkPushes(name, rec); err != nil {
		return err
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	var err error
	if len(rec) == 0 {
		err = r.client.Del(ctx, r.pushesKey(name)).Err()
	} else {
		err = r.client.Set(ctx, r.pushesKey(name), rec, 0).Err()
	}
	if err != nil {
		return unavailable("set pushes of "+string(name), err)
	}
	return nil
}

// Pushes implements Registry.
func (r *Redis) Pushes(ctx context.Context, name streamname.Name) ([]byte, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	rec, err := r.client.Get(ctx, r.pushesKey(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("pushes of "+string(name), err)
	}
	return rec, nil
}

// Sealer encrypts and authenticates records the nodes keep in the
// registry (AES-256-GCM, its key derived from the cluster secret for one
// purpose), so whoever reads the store reads no stream keys.
type Sealer struct{ aead cipher.AEAD }

// ErrUnsealed is a record that was not sealed with the same secret and
// purpose, or was altered.
var ErrUnsealed = errors.New("cluster: record not sealed with this cluster secret")

// NewSealer returns the Sealer of secret for purpose. Without a secret
// (a single node, whose registry is in its memory) the key is random.
func NewSealer(secret, purpose string) *Sealer {
	var key []byte
	if secret == "" {
		key = make([]byte, 32)
		rand.Read(key)
	} else {
		var err error
		key, err = hkdf.Key(sha256.New, []byte(secret), nil, "meshcast "+purpose, 32)
		if err != nil {
			panic(err) // only for lengths sha256 cannot give
		}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &Sealer{aead: aead}
}

// Seal returns plain encrypted, a random nonce first.
func (s *Sealer) Seal(plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plain, nil)
}

// Open returns what Seal sealed, or ErrUnsealed.
func (s *Sealer) Open(rec []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(rec) < n {
		return nil, ErrUnsealed
	}
	plain, err := s.aead.Open(nil, rec[:n], rec[n:], nil)
	if err != nil {
		return nil, ErrUnsealed
	}
	return plain, nil
}
