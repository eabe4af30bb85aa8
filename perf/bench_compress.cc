// Compression kernels against a memory pass, in one run.
//
// Every kernel is timed at 16 KiB .. 256 MiB of fp32 input next to the
// reference c[i] = a[i] + b[i] over arrays of the same length, and the summary
// prints each kernel's bytes/s as a fraction of the reference's bytes/s at
// that length. Bytes are counted as what the kernel must move:
//   ef_compress      reads x and err, writes err and the packed tensor
//   ef_compress_to   reads x and err_in, writes err_out and the packed tensor
//                    (two error buffers swapped every call, as a caller keeps them)
//   server_reduce    reads m packed tensors and err, writes err and the packed output
//   server_reduce_to reads m packed tensors (m = 4, 32, and 5: a division) and err_in,
//                    writes err_out and the packed
//                    output (two error buffers swapped every call)
//   decompress       reads the packed tensor, writes out
//   decompress_add   reads the packed tensor and acc, writes acc
//   sign_pack        reads u, writes the sign stream
//   sign_majority    reads m sign streams, writes one
//   reference        reads a and b, writes c
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

extern "C" {
#include "efps/compress.h"
}

namespace {

constexpr int kWorkers = 4;

struct Buf {
    explicit Buf(size_t bytes) : p(efps_aligned_alloc(bytes)), size(bytes) {}
    ~Buf() { efps_aligned_free(p); }
    Buf(const Buf &) = delete;
    Buf &operator=(const Buf &) = delete;
    float *f() const { return static_cast<float *>(p); }
    void *p;
    size_t size;
};

void fill(float *v, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((int64_t)(seed >> 11) % 2000001 - 1000000) * 1e-6f;
    }
}

bool use(benchmark::State &st, efps_simd_t simd)
{
    if (efps_compress_set_simd(simd) != EFPS_OK) {
        st.SkipWithError("variant not supported by this CPU");
        return false;
    }
    return true;
}

void check(benchmark::State &st, efps_status_t s)
{
    if (s != EFPS_OK)
        st.SkipWithError(efps_strerror(s));
}

// The reference is built for the best ISA this CPU runs (target_clones), so at
// cache-resident sizes it is not held back by SSE2 code (O3 + restrict: GCC
// vectorises it without alias checks); noinline so the
// compiler cannot fuse it with the timing loop. clang has no optimize
// attribute and refuses noinline next to target_clones (whose dispatch
// through an ifunc is never inlined anyway).
#ifdef __clang__
#define REFERENCE_ATTRS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define REFERENCE_ATTRS                                                                            \
    __attribute__((noinline, optimize("O3"), target_clones("avx512f", "avx2", "default")))
#endif
REFERENCE_ATTRS void
add_arrays(const float *__restrict a, const float *__restrict b, float *__restrict c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = a[i] + b[i];
}

void BM_reference(benchmark::State &st)
{
    const size_t n = (size_t)st.range(0);
    Buf a(4 * n), b(4 * n), c(4 * n);
    fill(a.f(), n, 1), fill(b.f(), n, 2), fill(c.f(), n, 3);
    for (auto _ : st) {
        add_arrays(a.f(), b.f(), c.f(), n);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(12 * n));
}

void BM_ef_compress(benchmark::State &st, efps_simd_t simd, size_t block)
{
    const size_t n = (size_t)st.range(0), ps = efps_packed_size(n, block);
    Buf x(4 * n), err(4 * n), packed(ps);
    fill(x.f(), n, 1), fill(err.f(), n, 2);
    if (!use(st, simd))
        return;
    for (auto _ : st)
        check(st, efps_ef_compress(x.f(), 1.0f, err.f(), 0.9f, n, block, packed.p));
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(12 * n + ps));
}

void BM_ef_compress_to(benchmark::State &st, efps_simd_t simd, size_t block)
{
    const size_t n = (size_t)st.range(0), ps = efps_packed_size(n, block);
    Buf x(4 * n), e0(4 * n), e1(4 * n), packed(ps);
    fill(x.f(), n, 1), fill(e0.f(), n, 2), fill(e1.f(), n, 3);
    float *err[2] = {e0.f(), e1.f()};
    if (!use(st, simd))
        return;
    int cur = 0;
    for (auto _ : st) {
        check(st, efps_ef_compress_to(x.f(), 1.0f, err[cur], 0.9f, err[!cur], n, block, packed.p));
        cur = !cur;
    }
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(12 * n + ps));
}

// The m packed pushes a server step reduces: random sign bits and positive
// scales written straight into the packed layout (any such bytes are a valid
// push, and 64 pushes of 64 Mi elements are made in a moment this way).
struct Pushes {
    Pushes(size_t n, size_t block, int m) : ps(efps_packed_size(n, block))
    {
        const size_t nb = efps_packed_blocks(n, block), so = efps_packed_signs_offset(n, block);
        uint64_t seed = 10;
        for (int w = 0; w < m; w++) {
            bufs.push_back(new Buf(ps));
            uint8_t *p = static_cast<uint8_t *>(bufs.back()->p);
            std::memset(p, 0, ps);
            fill(reinterpret_cast<float *>(p), nb, 10 + (uint64_t)w);
            for (size_t k = 0; k < nb; k++) {
                float *s = reinterpret_cast<float *>(p) + k;
                *s = std::fabs(*s) + 1e-3f;
            }
            for (size_t off = so; off + 8 <= so + (n + 7) / 8; off += 8) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                std::memcpy(p + off, &seed, 8);
            }
            ptrs.push_back(p);
        }
    }
    ~Pushes()
    {
        for (Buf *b : bufs)
            delete b;
    }
    Pushes(const Pushes &) = delete;
    Pushes &operator=(const Pushes &) = delete;
    size_t ps;
    std::vector<Buf *> bufs;
    std::vector<const void *> ptrs;
};

void BM_server_reduce(benchmark::State &st, efps_simd_t simd, size_t block)
{
    const size_t n = (size_t)st.range(0);
    Pushes in(n, block, kWorkers);
    Buf err(4 * n), out(in.ps);
    fill(err.f(), n, 2);
    if (use(st, simd))
        for (auto _ : st)
            check(st, efps_server_reduce(in.ptrs.data(), kWorkers, n, block, err.f(), 0.9f, out.p));
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(8 * n + (kWorkers + 1) * in.ps));
}

void BM_server_reduce_to(benchmark::State &st, efps_simd_t simd, size_t block, int m)
{
    const size_t n = (size_t)st.range(0);
    Pushes in(n, block, m);
    Buf e0(4 * n), e1(4 * n), out(in.ps);
    fill(e0.f(), n, 2), fill(e1.f(), n, 3);
    float *err[2] = {e0.f(), e1.f()};
    int cur = 0;
    if (use(st, simd))
        for (auto _ : st) {
            check(st, efps_server_reduce_to(in.ptrs.data(), m, n, block, err[cur], 0.9f, err[!cur],
                                            out.p));
            cur = !cur;
        }
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(8 * n + (size_t)(m + 1) * in.ps));
}

void BM_decompress(benchmark::State &st, efps_simd_t simd, size_t block, bool add)
{
    const size_t n = (size_t)st.range(0), ps = efps_packed_size(n, block);
    Buf x(4 * n), err(4 * n), packed(ps);
    fill(x.f(), n, 1), fill(err.f(), n, 2);
    efps_compress_set_simd(EFPS_SIMD_SCALAR);
    efps_ef_compress(x.f(), 1.0f, err.f(), 0.0f, n, block, packed.p);
    if (!use(st, simd))
        return;
    for (auto _ : st) {
        check(st, add ? efps_decompress_add(packed.p, n, block, 1e-3f, x.f())
                      : efps_decompress(packed.p, n, block, 1e-3f, x.f()));
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)((add ? 8 : 4) * n + ps));
}

void BM_sign_pack(benchmark::State &st, efps_simd_t simd)
{
    const size_t n = (size_t)st.range(0), ps = efps_sign_packed_size(n);
    Buf u(4 * n), out(ps);
    fill(u.f(), n, 1);
    if (!use(st, simd))
        return;
    for (auto _ : st)
        check(st, efps_sign_pack(u.f(), n, out.p));
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)(4 * n + ps));
}

void BM_sign_majority(benchmark::State &st, efps_simd_t simd)
{
    const size_t n = (size_t)st.range(0), ps = efps_sign_packed_size(n);
    Buf u(4 * n), out(ps);
    std::vector<Buf *> in;
    std::vector<const void *> ptrs;
    efps_compress_set_simd(EFPS_SIMD_SCALAR);
    for (int w = 0; w < kWorkers + 1; w++) { // odd m: no ties
        fill(u.f(), n, 20 + w);
        in.push_back(new Buf(ps));
        efps_sign_pack(u.f(), n, in.back()->p);
        ptrs.push_back(in.back()->p);
    }
    if (use(st, simd))
        for (auto _ : st)
            check(st, efps_sign_majority(ptrs.data(), kWorkers + 1, n, out.p));
    st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)((kWorkers + 2) * ps));
    for (Buf *b : in)
        delete b;
}

// Collects bytes/s of every run so the summary can divide by the reference.
class Summary : public benchmark::ConsoleReporter {
  public:
    void ReportRuns(const std::vector<Run> &runs) override
    {
        ConsoleReporter::ReportRuns(runs);
        for (const Run &r : runs) {
            if (r.error_occurred || r.run_type != Run::RT_Iteration)
                continue;
            auto it = r.counters.find("bytes_per_second");
            if (it != r.counters.end())
                runs_[r.benchmark_name()].push_back(it->second.value);
        }
    }
    // With --benchmark_repetitions, the median of the repetitions.
    void Print()
    {
        for (auto &kv : runs_) {
            std::vector<double> &v = kv.second;
            std::sort(v.begin(), v.end());
            rate_[kv.first] = v[v.size() / 2];
        }
        std::printf("\n%-44s %12s %10s %8s\n", "kernel/variant/elements", "GB/s", "ref GB/s",
                    "ratio");
        for (const auto &kv : rate_) {
            const std::string &name = kv.first;
            if (name.rfind("reference", 0) == 0)
                continue;
            const std::string n = name.substr(name.rfind('/'));
            auto ref = rate_.find("reference" + n);
            if (ref == rate_.end())
                continue;
            std::printf("%-44s %12.2f %10.2f %8.2f\n", name.c_str(), kv.second / 1e9,
                        ref->second / 1e9, kv.second / ref->second);
        }
    }

  private:
    std::map<std::string, std::vector<double>> runs_;
    std::map<std::string, double> rate_;
};

void register_all()
{
    // 16 KiB .. 256 MiB of fp32 input, by factors of 16.
    const std::vector<int64_t> sizes = {4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20};
    const efps_simd_t simds[] = {EFPS_SIMD_SCALAR, EFPS_SIMD_AVX2, EFPS_SIMD_AVX512};
    for (int64_t n : sizes) {
        benchmark::RegisterBenchmark("reference", BM_reference)->Arg(n);
        for (efps_simd_t s : simds) {
            const std::string v = efps_simd_name(s);
            benchmark::RegisterBenchmark(("ef_compress_b2048/" + v).c_str(), BM_ef_compress, s, 2048)->Arg(n);
            benchmark::RegisterBenchmark(("ef_compress_b0/" + v).c_str(), BM_ef_compress, s, 0)->Arg(n);
            benchmark::RegisterBenchmark(("ef_compress_to_b2048/" + v).c_str(), BM_ef_compress_to, s, 2048)->Arg(n);
            benchmark::RegisterBenchmark(("server_reduce_m4/" + v).c_str(), BM_server_reduce, s, 2048)->Arg(n);
            for (int m : {4, 5, 32})
                benchmark::RegisterBenchmark(("server_reduce_to_m" + std::to_string(m) + "/" + v).c_str(), BM_server_reduce_to, s, 2048, m)->Arg(n);
            benchmark::RegisterBenchmark(("decompress/" + v).c_str(), BM_decompress, s, 2048, false)->Arg(n);
            benchmark::RegisterBenchmark(("decompress_add/" + v).c_str(), BM_decompress, s, 2048, true)->Arg(n);
            benchmark::RegisterBenchmark(("sign_pack/" + v).c_str(), BM_sign_pack, s)->Arg(n);
            benchmark::RegisterBenchmark(("sign_majority_m5/" + v).c_str(), BM_sign_majority, s)->Arg(n);
        }
    }
}

} // namespace

int main(int argc, char **argv)
{
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    Summary summary;
    benchmark::RunSpecifiedBenchmarks(&summary);
    summary.Print();
    benchmark::Shutdown();
    return 0;
}
