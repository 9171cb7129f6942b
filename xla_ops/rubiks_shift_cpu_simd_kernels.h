// The vectorised CPU kernels of the RubiksShift op, written once for any vector width. No include
// guard: rubiks_shift_cpu_avx512.h and rubiks_shift_cpu_avx2.h each include this file inside their
// own namespace (rubiks::simd::avx512, rubiks::simd::avx2) and target pragma, after defining the
// vector operations it uses:
//   kLanes, Vec (kLanes float32), Mask (a bit per lane), setzero, set1, loadu, storeu, add, sub,
//   mul, fmadd, select, reduce_add, transpose (kLanes x kLanes in registers), load_lanes<D> /
//   store_lanes<D>
//   (masked lanes neither read nor written; a masked load gives +0), merge2<D, kWhole>,
//   store_line<D, kStream> (one 64-byte line of V = 64 / (kLanes * sizeof(T)) vectors, streamed
//   or stored plainly), stream_bytes64.
// The design (transposed rows, channels-last lane groups, axis-by-axis sums) is described at the top
// of rubiks_shift_cpu_simd.h.

inline int64_t round_up(int64_t v) { return (v + kLanes - 1) / kLanes * kLanes; }

// Lanes l of a vector starting at column `base` with lo <= base + l < hi.
inline Mask range_mask(int64_t base, int64_t lo, int64_t hi) {
  const int64_t a = std::clamp<int64_t>(lo - base, 0, kLanes);
  const int64_t b = std::clamp<int64_t>(hi - base, 0, kLanes);
  if (b <= a) return 0;
  const uint32_t bits = ((1u << b) - 1u) & ~((1u << a) - 1u);
  return static_cast<Mask>(bits);
}

// dst (cols x rows, row stride dst_stride, float32) = transpose of src (rows x cols, row stride
// src_stride, storage D). Every dst row is written in whole vectors of kLanes (dst_stride and the
// row length rounded up to kLanes must fit), lanes past `rows` with 0.
template <DType D>
inline void transpose_in(const typename Storage<D>::T* src, int64_t src_stride, int64_t rows,
                         int64_t cols, float* dst, int64_t dst_stride) {
  // Row blocks outer: the source is read in address order, kLanes rows at a time.
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t nr = std::min<int64_t>(kLanes, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += kLanes) {
      const Mask cm = range_mask(c0, 0, cols);
      const int64_t nc = std::min<int64_t>(kLanes, cols - c0);
      Vec v[kLanes];
      if (nr == kLanes) {
        for (int64_t i = 0; i < kLanes; ++i) v[i] = load_lanes<D>(src + (r0 + i) * src_stride + c0, cm);
      } else {
        for (int64_t i = 0; i < kLanes; ++i)
          v[i] = i < nr ? load_lanes<D>(src + (r0 + i) * src_stride + c0, cm) : setzero();
      }
      transpose(v);
      if (nc == kLanes) {
        for (int64_t i = 0; i < kLanes; ++i) storeu(dst + (c0 + i) * dst_stride + r0, v[i]);
      } else {
        for (int64_t i = 0; i < nc; ++i) storeu(dst + (c0 + i) * dst_stride + r0, v[i]);
      }
    }
  }
}

// out[i] = the sum of the kLanes lanes of acc[i] (a fixed tree), i < count.
inline void reduce_lanes(const float* acc, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = reduce_add(loadu(acc + i * kLanes));
}

// Copies n storage elements; `stream`: with streaming stores where the destination is 64-byte
// aligned: the destination is written whole and not read again by this kernel, so its lines need
// not be read into the cache first (that read-for-ownership would add a third memory pass). A small
// destination is better left in the cache for its reader (see cpu_stream_min_bytes).
template <typename T>
inline void copy_out(const T* src, T* dst, int64_t n, bool stream) {
  if (!stream) {
    std::memcpy(dst, src, n * sizeof(T));
    return;
  }
  const int64_t per = 64 / sizeof(T);
  int64_t head = ((64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64) / sizeof(T);
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) != 0) head = n;  // never for XLA buffers
  head = std::min(head, n);
  std::memcpy(dst, src, head * sizeof(T));
  int64_t i = head;
  for (; i + per <= n; i += per)
    stream_bytes64(dst + i, src + i);
  std::memcpy(dst + i, src + i, (n - i) * sizeof(T));
}

// What every task of one call shares: per channel, the w offsets and weights of the two corners
// and the lanes of each destination vector whose corner lies in the source; per destination frame
// p0 and per destination row p1, every channel's t and h corners.
struct InterpolationPlan {
  int64_t vectors;                   // destination vectors of kLanes columns per row
  std::vector<int64_t> w_off;        // (C, 2): corner k of column p reads source column p + off
  std::vector<float> w_weight;       // (C, 2): 0 where the corner is skipped
  std::vector<Mask> w_mask;          // (C, 2, vectors): no lane where the corner is skipped
  std::vector<CornerPair> t_taps;    // (E0, C)
  std::vector<CornerPair> h_taps;    // (E1, C)
  std::vector<uint8_t> finite;       // (C,): 0 where the shift is not finite (output NaN)
  int64_t ring;                      // source rows kept per source frame (see interpolate_rows)
  std::vector<int64_t> slot;         // (source rows,): h mod ring, the ring slot of source row h
  std::vector<int64_t> h_lo, h_hi;   // (E1,): the source rows destination row p1 reads
};

// kWeighted: as row_taps (interpolation: corners of weight 0 are skipped; the shift gradient keeps
// them).
template <bool kAdjoint, bool kWeighted = true>
InterpolationPlan plan_interpolation_cpu(const Geometry& g, const ChannelShift* shifts) {
  const int64_t* se = kAdjoint ? g.out : g.in;
  const int64_t* de = kAdjoint ? g.in : g.out;
  const int64_t C = g.c;
  InterpolationPlan plan;
  plan.vectors = round_up(de[2]) / kLanes;
  plan.w_off.resize(2 * C);
  plan.w_weight.resize(2 * C);
  plan.w_mask.resize(2 * C * plan.vectors);
  plan.t_taps.resize(de[0] * C);
  plan.h_taps.resize(de[1] * C);
  plan.finite.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const ChannelShift& cs = shifts[c];
    plan.finite[c] = cs.finite;
    const RowTaps w = row_taps<kAdjoint, kWeighted>(g, cs, 0, 0);
    const int64_t q = saturated_q(g, cs, 2);
    for (int k = 0; k < 2; ++k) {
      const int64_t off = kAdjoint ? g.pad[2] - q - k : q + k - g.pad[2];
      plan.w_off[2 * c + k] = off;
      plan.w_weight[2 * c + k] = w.w_use[k] ? w.ww[k] : 0.f;
      for (int64_t b = 0; b < plan.vectors; ++b)
        plan.w_mask[(2 * c + k) * plan.vectors + b] =
            w.w_use[k] ? range_mask(b * kLanes + off, 0, se[2]) & range_mask(b * kLanes, 0, de[2])
                       : 0;
    }
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      const RowTaps r = row_taps<kAdjoint, kWeighted>(g, cs, p0, 0);
      for (int i = 0; i < 2; ++i) {
        plan.t_taps[p0 * C + c].index[i] = r.t_on[i] ? r.t[i] : -1;
        plan.t_taps[p0 * C + c].weight[i] = r.t_on[i] ? r.wt[i] : 0.f;
      }
    }
    for (int64_t p1 = 0; p1 < de[1]; ++p1) {
      const RowTaps r = row_taps<kAdjoint, kWeighted>(g, cs, 0, p1);
      for (int j = 0; j < 2; ++j) {
        plan.h_taps[p1 * C + c].index[j] = r.h_on[j] ? r.h[j] : -1;
        plan.h_taps[p1 * C + c].weight[j] = r.h_on[j] ? r.wh[j] : 0.f;
      }
    }
  }
  // The source rows one destination row reads span at most `ring` rows, so a ring of that many
  // rows per source frame never evicts a row still needed for the current destination row, and as
  // the destination row advances the span only moves forward.
  plan.ring = 1;
  for (int64_t p1 = 0; p1 < de[1]; ++p1) {
    int64_t lo = se[1], hi = -1;
    for (int64_t c = 0; c < C; ++c)
      for (int j = 0; j < 2; ++j) {
        const int64_t h = plan.h_taps[p1 * C + c].index[j];
        if (h < 0) continue;
        lo = std::min(lo, h);
        hi = std::max(hi, h);
      }
    plan.h_lo.push_back(lo);
    plan.h_hi.push_back(hi);
    plan.ring = std::max(plan.ring, hi - lo + 1);
  }
  plan.ring = std::min(plan.ring, se[1]);
  plan.slot.resize(se[1]);
  for (int64_t h = 0; h < se[1]; ++h) plan.slot[h] = h % plan.ring;
  return plan;
}

// The w sums (and, kDerivative, the w differences v1 - v0) of the source rows of one sample, in
// a per-thread ring: source row (t, h) lives in slot (t, h mod ring). The rows one destination row
// reads span at most `ring` rows of a frame, so none of them is evicted while that destination row
// is formed, and as the destination row advances the span only moves forward: a task forms each
// source row it reads about once, not once for each of the 4 destination rows that read it.
// Slot layout: (C, dw) w sums, then (C, dw) w differences; lanes past the destination extent are 0.
template <DType D, bool kAdjoint, bool kDerivative>
class SourceRing {
 public:
  using T = typename Storage<D>::T;
  static constexpr int64_t kParts = kDerivative ? 2 : 1;

  SourceRing(const T* src, const Geometry& g, const InterpolationPlan& plan, int64_t n)
      : g_(g), plan_(plan), se_(kAdjoint ? g.out : g.in), C_(g.c), sw_(round_up(se_[2])),
        dw_(plan.vectors * kLanes), part_(C_ * dw_), src_(src + n * se_[0] * se_[1] * se_[2] * C_) {
    thread_local std::vector<float> ring, xt;
    thread_local std::vector<int64_t> tags;
    ring_ = scratch(ring, se_[0] * plan.ring * kParts * part_);
    xt_ = scratch(xt, C_ * sw_);
    tag_ = scratch(tags, se_[0] * plan.ring);
    std::fill(tag_, tag_ + se_[0] * plan.ring, int64_t{-1});
  }

  // Forms every source row that destination row p1 reads, in every frame, and queues in `ahead`
  // the rows that destination row p1 + 1 adds.
  void load(int64_t p1, RowPrefetcher& ahead) {
    for (int64_t t = 0; t < se_[0]; ++t)
      for (int64_t h = plan_.h_lo[p1]; h <= plan_.h_hi[p1]; ++h) form(t, h);
    if (p1 + 1 >= static_cast<int64_t>(plan_.h_hi.size())) return;
    for (int64_t h = std::max(plan_.h_hi[p1] + 1, plan_.h_lo[p1 + 1]); h <= plan_.h_hi[p1 + 1]; ++h)
      for (int64_t t = 0; t < se_[0]; ++t)
        ahead.queue(src_ + (t * se_[1] + h) * se_[2] * C_, se_[2] * C_ * sizeof(T));
  }

  // Channel c of source row (t, h), formed by load(); its part 1 (differences) is part_floats()
  // further.
  const float* row(int64_t t, int64_t h, int64_t c) const {
    return ring_ + ((t * plan_.ring + plan_.slot[h]) * kParts * part_) + c * dw_;
  }
  // The distance from a row of frame t to the same row of frame t + 1.
  int64_t frame_step() const { return plan_.ring * kParts * part_; }
  int64_t part_floats() const { return part_; }

 private:
  void form(int64_t t, int64_t h) {
    const int64_t slot = t * plan_.ring + plan_.slot[h];
    if (tag_[slot] == h) return;
    tag_[slot] = h;
    transpose_in<D>(src_ + (t * se_[1] + h) * se_[2] * C_, C_, se_[2], C_, xt_, sw_);
    float* a = ring_ + slot * kParts * part_;
    const int64_t vectors = plan_.vectors;
    for (int64_t c = 0; c < C_; ++c) {
      const float* row = xt_ + c * sw_;
      const int64_t o0 = plan_.w_off[2 * c], o1 = plan_.w_off[2 * c + 1];
      const Mask* m0 = &plan_.w_mask[2 * c * vectors];
      const Mask* m1 = m0 + vectors;
      const Vec w0 = set1(plan_.w_weight[2 * c]);
      const Vec w1 = set1(plan_.w_weight[2 * c + 1]);
      for (int64_t b = 0; b < vectors; ++b) {
        const int64_t p = b * kLanes;
        const Vec v0 = load_lanes<DType::kF32>(row + p + o0, m0[b]);
        const Vec v1 = load_lanes<DType::kF32>(row + p + o1, m1[b]);
        storeu(a + c * dw_ + p,
                         add(mul(w0, v0), mul(w1, v1)));
        if constexpr (kDerivative) storeu(a + part_ + c * dw_ + p, sub(v1, v0));
      }
    }
  }

  const Geometry& g_;
  const InterpolationPlan& plan_;
  const int64_t* se_;
  const int64_t C_, sw_, dw_, part_;
  const T* src_;
  float* ring_;
  float* xt_;
  int64_t* tag_;
};

// Destination rows p1 in [row_begin, row_end) of every frame of sample n, y (forward) or dx
// (kAdjoint), at w stride 1.
//
// The trilinear sum is evaluated axis by axis, each partial sum formed once and reused: it is the
// scalar kernel's nesting, t(h(w(x))), and every inner sum depends on fewer indices than the
// destination point. The w sums depend on the source row (SourceRing). The h sums depend on
// (source frame t, destination row p1): formed once per p1 for every frame, and read by the 2
// destination frames whose t corners fall on t. The t sums give the destination row, kLanes channels x
// kLanes columns at a time, transposed back to (W, C) in registers and streamed out.
template <DType D, bool kAdjoint>
void interpolate_rows(const typename Storage<D>::T* __restrict__ src,
                      typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                      const InterpolationPlan& plan, int64_t n, int64_t row_begin,
                      int64_t row_end, bool stream) {
  using T = typename Storage<D>::T;
  const int64_t* se = kAdjoint ? g.out : g.in;  // source extents
  const int64_t* de = kAdjoint ? g.in : g.out;  // destination extents
  const int64_t C = g.c, dw = plan.vectors * kLanes, part = C * dw, row_len = de[2] * C;
  SourceRing<D, kAdjoint, /*kDerivative=*/false> ring(src, g, plan, n);
  thread_local std::vector<float> h_buf, t_weights;
  thread_local std::vector<T> out_buf;
  thread_local std::vector<const float*> t_rows;
  float* h_sums = scratch(h_buf, se[0] * part);  // (source frame t, C, dw)
  const float* zeros = zero_row(dw);
  const float* nans = nan_row(dw);
  T* staged = scratch(out_buf, row_len);
  const float** tr = scratch(t_rows, 2 * C);
  float* tw = scratch(t_weights, 2 * C);
  const Vec zero = setzero();
  RowPrefetcher ahead;
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    ring.load(p1, ahead);
    for (int64_t c = 0; c < C; ++c) {
      const CornerPair& taps = plan.h_taps[p1 * C + c];
      const float* r[2];
      int64_t step[2];
      for (int j = 0; j < 2; ++j) {
        const bool on = taps.index[j] >= 0;
        r[j] = on ? ring.row(0, taps.index[j], c) : zeros;
        step[j] = on ? ring.frame_step() : 0;
      }
      const Vec w0 = set1(taps.weight[0]), w1 = set1(taps.weight[1]);
      for (int64_t t = 0; t < se[0]; ++t) {
        const float *r0 = r[0] + t * step[0], *r1 = r[1] + t * step[1];
        float* out = h_sums + (t * C + c) * dw;
        for (int64_t p = 0; p < dw; p += kLanes)
          storeu(out + p, add(mul(w0, loadu(r0 + p)),
                                                  mul(w1, loadu(r1 + p))));
      }
    }
    const int64_t share = ahead.share(de[0] * ((C + kLanes - 1) / kLanes));
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      for (int64_t c = 0; c < C; ++c) {
        const CornerPair& taps = plan.t_taps[p0 * C + c];
        for (int i = 0; i < 2; ++i) {
          const bool on = taps.index[i] >= 0;
          tr[2 * c + i] = on ? h_sums + (taps.index[i] * C + c) * dw : zeros;
          tw[2 * c + i] = on ? taps.weight[i] : 0.f;
        }
        if (!plan.finite[c]) {  // NaN * 1 + 0 * 0: NaN, the scalar kernel's
          tr[2 * c] = nans, tw[2 * c] = 1.f;
          tr[2 * c + 1] = zeros, tw[2 * c + 1] = 0.f;
        }
      }
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
        ahead.prefetch(share);
        const int64_t nc = std::min<int64_t>(kLanes, C - c0);
        const Mask cm = range_mask(c0, 0, C);
        for (int64_t b = 0; b < plan.vectors; ++b) {
          const int64_t p = b * kLanes;
          Vec v[kLanes];
          auto t_sum = [&](int64_t c) {
            const Vec sum = add(
                mul(set1(tw[2 * c]), loadu(tr[2 * c] + p)),
                mul(set1(tw[2 * c + 1]), loadu(tr[2 * c + 1] + p)));
            return add(sum, zero);  // the scalar kernel's result where sum is -0
          };
          if (nc == kLanes) {
            for (int64_t i = 0; i < kLanes; ++i) v[i] = t_sum(c0 + i);
          } else {
            for (int64_t i = 0; i < kLanes; ++i) v[i] = i < nc ? t_sum(c0 + i) : zero;
          }
          transpose(v);
          const int64_t nw = std::min<int64_t>(kLanes, de[2] - p);
          for (int64_t l = 0; l < nw; ++l) store_lanes<D>(staged + (p + l) * C + c0, cm, v[l]);
        }
      }
      copy_out(staged, dst + (((n * de[0] + p0) * de[1] + p1) * de[2]) * C, row_len, stream);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Channels-last interpolation: the same axis-by-axis sums as interpolate_rows, on the rows as they
// lie in memory, (W, C) with channels minor, so nothing is transposed. Vector v of a row holds its
// elements kLanes * v .. kLanes * v + kLanes - 1, which may straddle pixels (C = 72, 16 lanes: 4.5
// vectors a pixel); lane l holds channel (kLanes * v + l) mod C, a pattern that repeats every
// P = lcm(C, kLanes) / kLanes vectors (the vector's phase, v mod P). The lanes of a vector read different source columns (w), rows (h) and frames
// (t), but only a few distinct ones: lanes sharing a source are a group, and each group's value is
// merged into the vector by one masked load. Shifts in (-1, 1) give 2 groups per corner and axis;
// wider spreads may give more, and then the transposing kernel runs instead.
// ---------------------------------------------------------------------------------------------

// A (phase, corner) of an axis: its lanes read at most two distinct sources (offsets along w,
// indices along h and t), value[g] for the lanes of mask[g]; a mask may be empty.
struct LanePair {
  int64_t value[2];
  Mask mask[2];
};

struct ChannelsLastPlan {
  bool usable;                    // every (phase, corner) has at most two sources
  int64_t phases;                 // P: lane l of a vector of phase u holds channel (kLanes u + l) % C
  std::vector<LanePair> w, h, t;  // (phase, k), (p1, phase, j), (p0, phase, i)
  // Lane weights: (2, P, kLanes), (E1, 2, P, kLanes), (E0, 2, P, kLanes); 0 where the corner is
  // skipped.
  std::vector<float> w_weight, h_weight, t_weight;
  std::vector<Mask> not_finite;   // (P,): lanes whose output is NaN
  int64_t w_lo, w_hi;             // the least and greatest w offset any lane reads
};

// The per-lane form of `plan` (built with kWeighted = true).
inline ChannelsLastPlan plan_channels_last(const Geometry& g, const InterpolationPlan& plan,
                                           bool adjoint) {
  const int64_t* de = adjoint ? g.in : g.out;
  const int64_t C = g.c;
  ChannelsLastPlan cl;
  cl.usable = true;
  cl.phases = C / std::gcd(C, kLanes);
  const int64_t P = cl.phases, lanes = P * kLanes;
  auto channel = [&](int64_t u, int64_t l) { return (u * kLanes + l) % C; };
  // The lanes with on[l] grouped by value[l].
  auto pair = [&](const int64_t* value, const bool* on) {
    LanePair lp{{0, 0}, {0, 0}};
    int used = 0;
    for (int64_t l = 0; l < kLanes; ++l) {
      if (!on[l]) continue;
      int gi = 0;
      while (gi < used && lp.value[gi] != value[l]) ++gi;
      if (gi == 2) {
        cl.usable = false;
        continue;
      }
      if (gi == used) lp.value[used++] = value[l];
      lp.mask[gi] |= static_cast<Mask>(1u << l);
    }
    return lp;
  };
  int64_t v[kLanes];
  bool on[kLanes];
  cl.w_weight.assign(2 * lanes, 0.f);
  cl.w_lo = cl.w_hi = 0;
  for (int64_t u = 0; u < P; ++u)
    for (int k = 0; k < 2; ++k) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t c = channel(u, l);
        on[l] = plan.w_weight[2 * c + k] != 0.f;
        v[l] = on[l] ? plan.w_off[2 * c + k] : 0;
        if (!on[l]) continue;
        cl.w_weight[k * lanes + u * kLanes + l] = plan.w_weight[2 * c + k];
        cl.w_lo = std::min(cl.w_lo, v[l]);
        cl.w_hi = std::max(cl.w_hi, v[l]);
      }
      cl.w.push_back(pair(v, on));
    }
  auto taps = [&](const std::vector<CornerPair>& pairs, int64_t extent, std::vector<LanePair>& out,
                  std::vector<float>& weight) {
    weight.assign(extent * 2 * lanes, 0.f);
    for (int64_t p = 0; p < extent; ++p)
      for (int64_t u = 0; u < P; ++u)
        for (int i = 0; i < 2; ++i) {
          for (int64_t l = 0; l < kLanes; ++l) {
            const CornerPair& cp = pairs[p * C + channel(u, l)];
            on[l] = cp.index[i] >= 0;
            v[l] = on[l] ? cp.index[i] : 0;
            if (on[l]) weight[(p * 2 + i) * lanes + u * kLanes + l] = cp.weight[i];
          }
          out.push_back(pair(v, on));
        }
  };
  taps(plan.h_taps, de[1], cl.h, cl.h_weight);
  taps(plan.t_taps, de[0], cl.t, cl.t_weight);
  cl.not_finite.assign(P, 0);
  for (int64_t u = 0; u < P; ++u)
    for (int64_t l = 0; l < kLanes; ++l)
      if (!plan.finite[channel(u, l)]) cl.not_finite[u] |= static_cast<Mask>(1u << l);
  return cl;
}

// merge2 over float32 scratch rows r0, r1 (whole vectors readable) with the groups of lp.
inline Vec merge_pair(const LanePair& lp, const float* r0, const float* r1) {
  return merge2<DType::kF32, /*kWhole=*/true>(lp.mask[0], r0, lp.mask[1], r1);
}

// As interpolate_rows (same rows, same bits), channels last; needs cl.usable. Per destination
// row p1: the w sums of each new source row into a ring (as interpolate_rows keeps, one slot per
// source row and frame), the h sums of every source frame, then the t sums of every destination
// frame, written straight to the destination with streaming stores in whole 64-byte lines (no
// staging copy) where the row is 64-byte aligned. Each stage runs phase by phase, so a phase's
// groups, masks and weights stay in registers over its vectors v = u, u + P, ...
template <DType D, bool kAdjoint>
void interpolate_rows_cl(const typename Storage<D>::T* __restrict__ src,
                         typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                         const InterpolationPlan& plan, const ChannelsLastPlan& cl, int64_t n,
                         int64_t row_begin, int64_t row_end, bool stream) {
  using T = typename Storage<D>::T;
  constexpr int64_t V = 64 / (kLanes * sizeof(T));  // vectors per 64-byte line of storage
  const int64_t* se = kAdjoint ? g.out : g.in;
  const int64_t* de = kAdjoint ? g.in : g.out;
  const int64_t C = g.c, P = cl.phases, lanes = P * kLanes;
  const int64_t len = de[2] * C, src_len = se[2] * C;     // elements of a destination, source row
  const int64_t lines = (len + V * kLanes - 1) / (V * kLanes), rl = lines * V * kLanes;
  const int64_t R = plan.ring, slots = se[0] * R;
  const T* sample = src + n * se[0] * se[1] * src_len;
  thread_local std::vector<float> ring_buf, h_buf;
  thread_local std::vector<int64_t> tag_buf;
  float* ring = scratch(ring_buf, slots * rl);  // (frame, slot, rl) w sums
  int64_t* tag = scratch(tag_buf, slots);
  std::fill(tag, tag + slots, int64_t{-1});
  float* h_sums = scratch(h_buf, se[0] * rl);  // (frame, rl)
  const Vec zero = setzero(), nan = set1(NAN);
  // Vectors [v_in, v_out) read no w corner outside the source row: no range masks there.
  const int64_t v_in = (std::max<int64_t>(0, -cl.w_lo * C) + kLanes - 1) / kLanes;
  const int64_t v_out = std::max(v_in, std::min(len, src_len - cl.w_hi * C) / kLanes);
  RowPrefetcher ahead;
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    if (p1 + 1 < de[1])
      for (int64_t h = std::max(plan.h_hi[p1] + 1, plan.h_lo[p1 + 1]); h <= plan.h_hi[p1 + 1]; ++h)
        for (int64_t t = 0; t < se[0]; ++t)
          ahead.queue(sample + (t * se[1] + h) * src_len, src_len * sizeof(T));
    // One prefetch every few h vectors and t lines: finer than a burst per frame, which timed
    // slower at the paper shape (f32 and bf16; KERNEL_NOTES v9).
    ahead.spread(se[0] * rl / kLanes + de[0] * lines);
    for (int64_t t = 0; t < se[0]; ++t) {
      for (int64_t h = plan.h_lo[p1]; h <= plan.h_hi[p1]; ++h) {
        const int64_t s = t * R + plan.slot[h];
        if (tag[s] == h) continue;
        tag[s] = h;
        const T* x = sample + (t * se[1] + h) * src_len;
        float* a = ring + s * rl;
        for (int64_t u = 0; u < P; ++u) {
          const LanePair k0 = cl.w[2 * u], k1 = cl.w[2 * u + 1];
          const Vec ww0 = loadu(&cl.w_weight[u * kLanes]);
          const Vec ww1 = loadu(&cl.w_weight[lanes + u * kLanes]);
          const int64_t o00 = k0.value[0] * C, o01 = k0.value[1] * C;
          const int64_t o10 = k1.value[0] * C, o11 = k1.value[1] * C;
          auto w_sum = [&](int64_t e, auto at_edge) {
            Mask m00 = k0.mask[0], m01 = k0.mask[1], m10 = k1.mask[0], m11 = k1.mask[1];
            if constexpr (decltype(at_edge)::value) {  // lanes whose source pixel lies outside
              m00 &= range_mask(e + o00, 0, src_len);
              m01 &= range_mask(e + o01, 0, src_len);
              m10 &= range_mask(e + o10, 0, src_len);
              m11 &= range_mask(e + o11, 0, src_len);
            }
            constexpr bool kWhole = !decltype(at_edge)::value;
            const Vec v0 = merge2<D, kWhole>(m00, x + e + o00, m01, x + e + o01);
            const Vec v1 = merge2<D, kWhole>(m10, x + e + o10, m11, x + e + o11);
            storeu(a + e, add(mul(ww0, v0), mul(ww1, v1)));
          };
          for (int64_t e = u * kLanes; e < rl; e += lanes) {
            const int64_t vec = e / kLanes;
            if (vec >= v_in && vec < v_out)
              w_sum(e, std::false_type{});
            else
              w_sum(e, std::true_type{});
          }
        }
      }
      float* out = h_sums + t * rl;
      auto slot = [&](int64_t h) { return ring + (t * R + plan.slot[h]) * rl; };
      for (int64_t u = 0; u < P; ++u) {
        const LanePair j0 = cl.h[(p1 * P + u) * 2], j1 = cl.h[(p1 * P + u) * 2 + 1];
        const float *r00 = slot(j0.value[0]), *r01 = slot(j0.value[1]);
        const float *r10 = slot(j1.value[0]), *r11 = slot(j1.value[1]);
        const float* hw = &cl.h_weight[p1 * 2 * lanes + u * kLanes];
        const Vec w0 = loadu(hw), w1 = loadu(hw + lanes);
        for (int64_t e = u * kLanes; e < rl; e += lanes) {
          ahead.tick();
          const Vec u0 = merge_pair(j0, r00 + e, r01 + e), u1 = merge_pair(j1, r10 + e, r11 + e);
          storeu(out + e, add(mul(w0, u0), mul(w1, u1)));
        }
      }
    }
    // t sums, a 64-byte line (V vectors) at a time; line phases repeat every P / gcd(P, V) lines.
    const int64_t line_phases = P / std::gcd(P, V);
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      T* row = dst + ((n * de[0] + p0) * de[1] + p1) * len;
      const bool aligned = reinterpret_cast<uintptr_t>(row) % 64 == 0;
      for (int64_t k = 0; k < line_phases; ++k) {
        LanePair i0[V], i1[V];
        Vec w0[V], w1[V];
        Mask bad[V];
        for (int64_t j = 0; j < V; ++j) {
          const int64_t u = (k * V + j) % P;
          i0[j] = cl.t[(p0 * P + u) * 2];
          i1[j] = cl.t[(p0 * P + u) * 2 + 1];
          const float* tw = &cl.t_weight[p0 * 2 * lanes + u * kLanes];
          w0[j] = loadu(tw);
          w1[j] = loadu(tw + lanes);
          bad[j] = cl.not_finite[u];
        }
        auto t_sum = [&](int64_t j, int64_t e) {
          const Vec u0 = merge_pair(i0[j], h_sums + i0[j].value[0] * rl + e,
                                       h_sums + i0[j].value[1] * rl + e);
          const Vec u1 = merge_pair(i1[j], h_sums + i1[j].value[0] * rl + e,
                                       h_sums + i1[j].value[1] * rl + e);
          const Vec sum = add(mul(w0[j], u0), mul(w1[j], u1));
          return add(select(bad[j], nan, sum), zero);
        };
        for (int64_t e = k * V * kLanes; e < rl; e += line_phases * V * kLanes) {
          ahead.tick();
          if (aligned && e + V * kLanes <= len) {
            Vec line[V];
            for (int64_t j = 0; j < V; ++j) line[j] = t_sum(j, e + j * kLanes);
            if (stream)
              store_line<D, true>(row + e, line);
            else
              store_line<D, false>(row + e, line);
          } else {
            for (int64_t j = 0; j < V && e + j * kLanes < len; ++j)
              store_lanes<D>(row + e + j * kLanes, range_mask(e + j * kLanes, 0, len),
                       t_sum(j, e + j * kLanes));
          }
        }
      }
    }
  }
  _mm_sfence();  // the streamed lines are visible before the task reports itself done
}

// Adds to acc ((C, 3, kLanes) float32 lane sums) the shift gradient of output rows p1 in
// [row_begin, row_end) of every frame of sample n, at w stride 1. `plan` is the forward's, built
// with kWeighted = false (corners of weight 0 count: their derivative weight is +-1).
//
// Per point, with v_ijk the corners and s = (-1, +1) the derivative weights, the gradient is
// dy * (sum s_i wh_j ww_k v, sum wt_i s_j ww_k v, sum wt_i wh_j s_k v), evaluated axis by axis as the
// forward: the w sums A and differences Dw of each source row (SourceRing), then per t corner the
// h sums of A and of Dw and the h difference of A, then the t difference and t sums. The order of
// the additions differs from the scalar kernels' (the lanes sum separately); the reduction is
// still fixed by the shape alone.
template <DType D>
void shift_grad_rows(const typename Storage<D>::T* __restrict__ x,
                     const typename Storage<D>::T* __restrict__ dy, const Geometry& g,
                     const InterpolationPlan& plan, int64_t n, int64_t row_begin, int64_t row_end,
                     float* __restrict__ acc) {
  const int64_t C = g.c, dw = plan.vectors * kLanes;
  SourceRing<D, /*kAdjoint=*/false, /*kDerivative=*/true> ring(x, g, plan, n);
  thread_local std::vector<float> dy_buf;
  float* dyt = scratch(dy_buf, C * dw);
  const float* zeros = zero_row(2 * C * dw);  // a whole slot: sums and differences
  const int64_t diff = ring.part_floats();
  RowPrefetcher ahead;
  const int64_t dy_row = g.out[2] * C;
  auto dy_at = [&](int64_t p0, int64_t p1) { return dy + ((n * g.out[0] + p0) * g.out[1] + p1) * dy_row; };
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    ring.load(p1, ahead);
    if (p1 + 1 < row_end)
      for (int64_t p0 = 0; p0 < g.out[0]; ++p0) ahead.queue(dy_at(p0, p1 + 1), dy_row * sizeof(*dy));
    const int64_t share = ahead.share(g.out[0] * C);
    for (int64_t p0 = 0; p0 < g.out[0]; ++p0) {
      transpose_in<D>(dy_at(p0, p1), C, g.out[2], C, dyt, dw);
      for (int64_t c = 0; c < C; ++c) {
        ahead.prefetch(share);
        const CornerPair& tt = plan.t_taps[p0 * C + c];
        const CornerPair& hh = plan.h_taps[p1 * C + c];
        const float* r[2][2];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j)
            r[i][j] = tt.index[i] >= 0 && hh.index[j] >= 0 ? ring.row(tt.index[i], hh.index[j], c)
                                                           : zeros;
        // Absent corners read rows of zeros (and their weights do not matter).
        const Vec wh0 = set1(hh.weight[0]), wh1 = set1(hh.weight[1]);
        const Vec wt0 = set1(tt.weight[0]), wt1 = set1(tt.weight[1]);
        Vec gt = setzero(), gh = gt, gw = gt;
        for (int64_t p = 0; p < dw; p += kLanes) {
          Vec sum_h[2], diff_h[2], sum_hw[2];
          for (int i = 0; i < 2; ++i) {
            const Vec a0 = loadu(r[i][0] + p), a1 = loadu(r[i][1] + p);
            const Vec d0 = loadu(r[i][0] + diff + p);
            const Vec d1 = loadu(r[i][1] + diff + p);
            sum_h[i] = fmadd(wh1, a1, mul(wh0, a0));
            diff_h[i] = sub(a1, a0);
            sum_hw[i] = fmadd(wh1, d1, mul(wh0, d0));
          }
          const Vec up = loadu(dyt + c * dw + p);
          gt = fmadd(up, sub(sum_h[1], sum_h[0]), gt);
          gh = fmadd(up, fmadd(wt1, diff_h[1], mul(wt0, diff_h[0])),
                               gh);
          gw = fmadd(up, fmadd(wt1, sum_hw[1], mul(wt0, sum_hw[0])),
                               gw);
        }
        float* a = acc + c * 3 * kLanes;
        storeu(a, add(loadu(a), gt));
        storeu(a + kLanes, add(loadu(a + kLanes), gh));
        storeu(a + 2 * kLanes, add(loadu(a + 2 * kLanes), gw));
      }
    }
  }
}


// This width's kernels as one type, for the handlers (rubiks_shift_cpu.cc), which choose the width
// at run time and are written once for both: a type can be a template argument, a namespace not.
struct Kernels {
  static constexpr int64_t lanes = kLanes;
  using Plan = InterpolationPlan;
  using ClPlan = ChannelsLastPlan;

  template <bool kAdjoint, bool kWeighted = true>
  static Plan plan(const Geometry& g, const ChannelShift* shifts) {
    return plan_interpolation_cpu<kAdjoint, kWeighted>(g, shifts);
  }
  static ClPlan plan_cl(const Geometry& g, const Plan& plan, bool adjoint) {
    return plan_channels_last(g, plan, adjoint);
  }
  template <DType D, bool kAdjoint>
  static void rows(const typename Storage<D>::T* src, typename Storage<D>::T* dst, const Geometry& g,
                   const Plan& plan, const ClPlan* cl, int64_t n, int64_t row_begin,
                   int64_t row_end, bool stream) {
    if (cl != nullptr)
      interpolate_rows_cl<D, kAdjoint>(src, dst, g, plan, *cl, n, row_begin, row_end, stream);
    else
      interpolate_rows<D, kAdjoint>(src, dst, g, plan, n, row_begin, row_end, stream);
  }
  template <DType D>
  static void shift_grad(const typename Storage<D>::T* x, const typename Storage<D>::T* dy,
                         const Geometry& g, const Plan& plan, int64_t n, int64_t row_begin,
                         int64_t row_end, float* acc) {
    shift_grad_rows<D>(x, dy, g, plan, n, row_begin, row_end, acc);
  }
  static void reduce(const float* acc, float* out, int64_t count) {
    reduce_lanes(acc, out, count);
  }
};
