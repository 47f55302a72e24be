using System.Runtime.Intrinsics;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Exact k-th smallest magnitudes of <c>x - b</c> (or of <c>x</c>) over a tensor seen in blocks: a two-pass radix
/// select on the float32 bit patterns with the sign bit cleared (they order like the magnitudes, NaN last). Pass 0
/// counts the high 15 bits of every key; pass 1 counts the low 16 bits of the keys in each rank's chosen bucket.
/// Counts add up over blocks, so the result does not depend on how the tensor is cut. Several ranks share pass 0.
/// </summary>
internal sealed unsafe class MagnitudeRanks
{
    private const int HighBuckets = 1 << 15;
    private const int LowBuckets = 1 << 16;
    private const long Chunk = 1L << 20;

    private readonly long[] _ranks;
    private readonly long[] _remaining;
    private readonly uint[] _prefix;
    private readonly object _merge = new();
    private long[]? _high = new long[HighBuckets];
    private long[][]? _low;
    private uint[]? _result;

    // Histograms reused by blocks counted on the calling thread (one chunk): a fresh 128-256 KiB array per block and
    // model (large-object heap) cost more than the counting itself once blocks are around a million elements.
    private uint[]? _spareHigh;
    private uint[]? _spareHighSecond;
    private uint[]? _spareLow;

    /// <param name="ranks">1-based ranks, each within 1..element count.</param>
    public MagnitudeRanks(params long[] ranks)
    {
        _ranks = ranks;
        _remaining = [.. ranks];
        _prefix = new uint[ranks.Length];
    }

    /// <summary>The pass the next <see cref="Add"/> counts for (0 or 1), or 2 once the values are known.</summary>
    public int Stage { get; private set; }

    /// <summary>Counts <paramref name="n"/> elements of <c>|x - b|</c> (<paramref name="b"/> null: <c>|x|</c>) for the current pass.</summary>
    public void Add(float* x, float* b, long n)
    {
        if (Stage > 1)
        {
            throw new InvalidOperationException("the magnitude ranks are already complete");
        }
        var chunks = (n + Chunk - 1) / Chunk;
        if (chunks <= 1)
        {
            Count(x, b, 0, n, reuse: true);
            return;
        }
        Parallel.For(0L, chunks, c => Count(x, b, c * Chunk, Math.Min(n, (c + 1) * Chunk), reuse: false));
    }

    /// <summary>Ends the current pass (after every element was added once).</summary>
    public void EndPass()
    {
        if (Stage == 0)
        {
            _low = new long[_ranks.Length][];
            for (var r = 0; r < _ranks.Length; r++)
            {
                _prefix[r] = (uint)Find(_high!, ref _remaining[r]);
                _low[r] = new long[LowBuckets];
            }
            _high = null;
        }
        else if (Stage == 1)
        {
            _result = new uint[_ranks.Length];
            for (var r = 0; r < _ranks.Length; r++)
            {
                _result[r] = (_prefix[r] << 16) | (uint)Find(_low![r], ref _remaining[r]);
            }
            _low = null;
        }
        Stage++;
    }

    /// <summary>The magnitude of rank number <paramref name="index"/> (in the constructor's order); valid once <see cref="Stage"/> is 2.</summary>
    public float Value(int index) =>
        _result is null ? throw new InvalidOperationException("the magnitude ranks are not complete") : BitConverter.UInt32BitsToSingle(_result[index]);

    /// <param name="reuse">Count into this instance's spare histograms (only when called from one thread at a time).</param>
    private void Count(float* x, float* b, long start, long end, bool reuse)
    {
        if (Stage == 0)
        {
            var local = Histogram(reuse, ref _spareHigh, HighBuckets);
            CountHigh(x, b, start, end, local, Histogram(reuse, ref _spareHighSecond, HighBuckets));
            lock (_merge)
            {
                for (var i = 0; i < local.Length; i++)
                {
                    _high![i] += local[i];
                }
            }
            return;
        }
        for (var r = 0; r < _ranks.Length; r++)
        {
            var local = Histogram(reuse, ref _spareLow, LowBuckets);
            if (CountLow(x, b, start, end, _prefix[r], local))
            {
                lock (_merge)
                {
                    var low = _low![r];
                    for (var i = 0; i < local.Length; i++)
                    {
                        low[i] += local[i];
                    }
                }
            }
        }
    }

    /// <summary>A zeroed histogram: the spare one (cleared) when reusing, else a new one.</summary>
    private static uint[] Histogram(bool reuse, ref uint[]? spare, int buckets)
    {
        if (!reuse)
        {
            return new uint[buckets];
        }
        if (spare is null)
        {
            spare = new uint[buckets];
        }
        else
        {
            Array.Clear(spare);
        }
        return spare;
    }

    /// <summary>
    /// Counts the high bits; alternate lanes go to two copies of the histogram (shorter store-to-load chains when keys
    /// repeat), <paramref name="second"/> (zeroed) being added into <paramref name="hist"/> at the end.
    /// </summary>
    private static void CountHigh(float* x, float* b, long start, long end, uint[] hist, uint[] second)
    {
        var e = start;
        if (Vector256.IsHardwareAccelerated)
        {
            fixed (uint* h0 = hist, h1 = second)
            {
                for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
                {
                    var high = Keys(x, b, e) >>> 16;
                    h0[high.GetElement(0)]++;
                    h1[high.GetElement(1)]++;
                    h0[high.GetElement(2)]++;
                    h1[high.GetElement(3)]++;
                    h0[high.GetElement(4)]++;
                    h1[high.GetElement(5)]++;
                    h0[high.GetElement(6)]++;
                    h1[high.GetElement(7)]++;
                }
            }
            for (var i = 0; i < HighBuckets; i++)
            {
                hist[i] += second[i];
            }
        }
        for (; e < end; e++)
        {
            hist[Key(x, b, e) >> 16]++;
        }
    }

    /// <summary>Counts the low bits of keys whose high bits equal <paramref name="prefix"/>; false when none did.</summary>
    private static bool CountLow(float* x, float* b, long start, long end, uint prefix, uint[] hist)
    {
        var any = false;
        var e = start;
        if (Vector256.IsHardwareAccelerated)
        {
            var wanted = Vector256.Create(prefix);
            for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
            {
                var keys = Keys(x, b, e);
                var hits = Vector256.Equals(keys >>> 16, wanted).ExtractMostSignificantBits();
                while (hits != 0)
                {
                    var lane = System.Numerics.BitOperations.TrailingZeroCount(hits);
                    hist[keys.GetElement(lane) & 0xFFFF]++;
                    hits &= hits - 1;
                    any = true;
                }
            }
        }
        for (; e < end; e++)
        {
            var key = Key(x, b, e);
            if (key >> 16 == prefix)
            {
                hist[key & 0xFFFF]++;
                any = true;
            }
        }
        return any;
    }

    private static Vector256<uint> Keys(float* x, float* b, long e)
    {
        var v = Vector256.Load(x + e);
        if (b is not null)
        {
            v -= Vector256.Load(b + e);
        }
        return v.AsUInt32() & Vector256.Create(0x7FFF_FFFFu);
    }

    private static uint Key(float* x, float* b, long e) =>
        BitConverter.SingleToUInt32Bits(b is null ? x[e] : x[e] - b[e]) & 0x7FFF_FFFF;

    private static int Find(long[] hist, ref long remaining)
    {
        for (var i = 0; i < hist.Length; i++)
        {
            if (remaining <= hist[i])
            {
                return i;
            }
            remaining -= hist[i];
        }
        throw new InvalidOperationException("radix select ran past the last bucket (an input changed between passes, or a block was missed)");
    }
}
