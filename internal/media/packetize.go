package media

// NAL unit types the packetizer looks at.
const (
	naluIDR = 5
	naluSPS = 7
	naluPPS = 8
	naluAUD = 9
)

// H264Packetizer turns H.264 access units whose parameter sets travel in
// band (MPEG-TS, RTP) into packets: a sequence header (avcC) whenever the
// parameter sets change, then each frame in AVCC form without them.
// Frames before the first parameter sets are dropped: nothing can decode
// them.
type H264Packetizer struct {
	sps, pps []byte // of the last sequence header
	newSPS   []byte // parameter sets seen since, possibly in different access units
	newPPS   []byte
}

// Packets appends the packets of one access unit, decoded at dts and shown
// at pts (milliseconds), to dst.
func (z *H264Packetizer) Packets(dst []*Packet, dts, pts int64, au [][]byte) []*Packet {
	var sps, pps []byte
	key := false
	nalus := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case naluSPS:
			sps = n
			continue
		case naluPPS:
			pps = n
			continue
		case naluAUD:
			continue
		case naluIDR:
			key = true
		}
		nalus = append(nalus, n)
	}
	if len(sps) >= 4 {
		z.newSPS = append(z.newSPS[:0], sps...)
	}
	if pps != nil {
		z.newPPS = append(z.newPPS[:0], pps...)
	}
	if z.newSPS != nil && z.newPPS != nil && (string(z.newSPS) != string(z.sps) || string(z.newPPS) != string(z.pps)) {
		z.sps, z.pps = append([]byte(nil), z.newSPS...), append([]byte(nil), z.newPPS...)
		sps = z.sps
		cfg := &AVCConfig{Profile: sps[1], Compat: sps[2], Level: sps[3], LengthSize: 4, SPS: [][]byte{z.sps}, PPS: [][]byte{z.pps}}
		dst = append(dst, &Packet{Kind: KindVideo, Codec: CodecH264, DTS: dts, SeqHeader: true, Payload: cfg.Marshal()})
	}
	if z.sps == nil || len(nalus) == 0 {
		return dst
	}
	return append(dst, &Packet{Kind: KindVideo, Codec: CodecH264, DTS: dts, CTS: int32(pts - dts), Keyframe: key, Payload: NALUsToAVCC(nalus)})
}
