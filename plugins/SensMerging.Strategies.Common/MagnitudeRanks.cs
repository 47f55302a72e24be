using System.Collections.Concurrent;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Exact k-th smallest magnitudes of <c>x - b</c> (or of <c>x</c>) over a tensor seen in blocks: a radix select on the
/// float32 bit patterns with the sign bit cleared (they order like the magnitudes, NaN last). Counts add up over blocks,
/// so the result does not depend on how the tensor is cut or in which order its blocks are counted.
/// <list type="bullet">
/// <item>Window pass (first, when the element count is known and large): the first block's keys (a strided sample)
/// estimate each rank's high 15 bits, and the sample's spread around that estimate sets how many high buckets the
/// rank's window spans (1 to 13); the pass counts, per rank, the keys below the window (a vector compare, no scatter)
/// and the low 16 bits of the keys inside it (a scatter into a histogram larger than the core's cache: the narrower
/// the window, the fewer keys pay it). When the rank falls inside the
/// window, its value follows from these counts and the select is done in one pass.</item>
/// <item>Otherwise (no window, or the rank fell outside it) the classic two passes for the ranks still open: the high
/// 15 bits of every key, then the low 16 bits of the keys in each rank's chosen bucket.</item>
/// </list>
/// All ways count the same keys exactly, so the values are identical; the window only saves passes.
/// </summary>
internal sealed unsafe class MagnitudeRanks
{
    private const int HighBuckets = 1 << 15;
    private const int LowBuckets = 1 << 16;
    private const long Chunk = 1L << 20;

    /// <summary>Tensors of at least this many elements start with a window pass.</summary>
    private const long WindowMinElements = 1L << 18;

    /// <summary>High buckets each side of the estimated one that the widest window covers.</summary>
    private const int WindowRadius = 6;

    /// <summary>The widest window, in high buckets (the window histograms' size).</summary>
    private const int WindowBuckets = (2 * WindowRadius) + 1;

    /// <summary>
    /// A window spans the buckets of the sample's keys within this many standard deviations of the sample quantile
    /// (binomial, <c>sqrt(p (1 - p) n)</c> keys) each side of the rank's estimate, plus <see cref="WindowMargin"/>.
    /// </summary>
    private const double WindowSigmas = 4.0;

    /// <summary>Extra high buckets each side of the sampled span (the sample is of the first block only).</summary>
    private const int WindowMargin = 1;

    /// <summary>Keys sampled (strided, from the first block) to estimate the buckets.</summary>
    private const long SampleElements = 1L << 17;

    /// <summary>Window histograms, reused across tensors: fresh ones would cost ~7 us per page touched.</summary>
    private static readonly ConcurrentBag<uint[]> WindowPool = [];

    private readonly long[] _ranks;
    private readonly long[] _remaining;
    private readonly uint[] _prefix;
    private readonly uint[] _result;
    private readonly bool[] _done;
    private readonly object _merge = new();
    private readonly long _elementCount;
    private Pass _pass = Pass.Undecided;
    private long[]? _high;
    private long[]?[]? _low;

    // Window pass, per rank: first high bucket of the window, keys below it, keys inside it, and the counts of the keys
    // inside indexed (bucket - first) << 16 | low bits (which is key order).
    private int[]? _windowFirst;
    private int[]? _windowWidth;
    private long[]? _below;
    private long[]? _inside;
    private uint[]?[]? _window;

    // Histograms reused by blocks counted on the calling thread (one chunk): a fresh 128-256 KiB array per block and
    // model (large-object heap) cost more than the counting itself once blocks are around a million elements.
    private uint[]? _spareHigh;
    private uint[]? _spareHighSecond;
    private uint[]? _spareLow;

    /// <param name="elementCount">Elements the tensor has (0: unknown, no window pass).</param>
    /// <param name="ranks">1-based ranks, each within 1..element count.</param>
    public MagnitudeRanks(long elementCount, params long[] ranks)
    {
        _elementCount = elementCount;
        _ranks = ranks;
        _remaining = [.. ranks];
        _prefix = new uint[ranks.Length];
        _result = new uint[ranks.Length];
        _done = new bool[ranks.Length];
    }

    private enum Pass
    {
        Undecided,
        Window,
        High,
        Low,
        Done,
    }

    /// <summary>True once every rank's value is known (no more passes).</summary>
    public bool IsComplete => _pass == Pass.Done;

    /// <summary>Counts <paramref name="n"/> float32 elements of <c>|x - b|</c> (<paramref name="b"/> null: <c>|x|</c>) for the current pass.</summary>
    public void Add(float* x, float* b, long n) => Add<Float32Elements>(x, b, n);

    /// <summary>
    /// Counts <paramref name="n"/> elements stored as <typeparamref name="T"/> (the magnitude of the float32 difference,
    /// so bfloat16 inputs rank exactly as their widened float32 copies would).
    /// </summary>
    public void Add<T>(void* x, void* b, long n)
        where T : struct, IElementFormat
    {
        if (_pass == Pass.Done)
        {
            throw new InvalidOperationException("the magnitude ranks are already complete");
        }
        if (_pass == Pass.Undecided)
        {
            _pass = ChooseWindows<T>(x, b, n) ? Pass.Window : Pass.High;
            _high = _pass == Pass.High ? new long[HighBuckets] : null;
        }
        var chunks = (n + Chunk - 1) / Chunk;
        if (chunks <= 1)
        {
            Count<T>(x, b, 0, n, reuse: true);
            return;
        }
        Parallel.For(0L, chunks, c => Count<T>(x, b, c * Chunk, Math.Min(n, (c + 1) * Chunk), reuse: false));
    }

    /// <summary>Ends the current pass (after every element was added once).</summary>
    public void EndPass()
    {
        switch (_pass)
        {
            case Pass.Undecided:
                // A pass over no elements: nothing was counted, so every rank is past the end.
                _high = new long[HighBuckets];
                _pass = Pass.High;
                EndPass();
                return;
            case Pass.Window:
                EndWindowPass();
                break;
            case Pass.High:
                _low = new long[_ranks.Length][];
                for (var r = 0; r < _ranks.Length; r++)
                {
                    if (!_done[r])
                    {
                        _prefix[r] = (uint)Find(_high!, ref _remaining[r]);
                        _low[r] = new long[LowBuckets];
                    }
                }
                _high = null;
                _pass = Pass.Low;
                break;
            case Pass.Low:
                for (var r = 0; r < _ranks.Length; r++)
                {
                    if (_low![r] is { } low)
                    {
                        _result[r] = (_prefix[r] << 16) | (uint)Find(low, ref _remaining[r]);
                        _done[r] = true;
                    }
                }
                _low = null;
                _pass = Pass.Done;
                break;
            default:
                throw new InvalidOperationException("the magnitude ranks are already complete");
        }
    }

    /// <summary>The magnitude of rank number <paramref name="index"/> (in the constructor's order); valid once <see cref="IsComplete"/>.</summary>
    public float Value(int index) =>
        _pass != Pass.Done ? throw new InvalidOperationException("the magnitude ranks are not complete") : BitConverter.UInt32BitsToSingle(_result[index]);

    private void EndWindowPass()
    {
        var open = 0;
        for (var r = 0; r < _ranks.Length; r++)
        {
            var inside = _ranks[r] - _below![r];
            if (inside >= 1 && inside <= _inside![r])
            {
                var index = Find(_window![r].AsSpan(0, _windowWidth![r] * LowBuckets), ref inside);
                _result[r] = ((uint)(_windowFirst![r] + (index >> 16)) << 16) | (uint)(index & 0xFFFF);
                _done[r] = true;
            }
            else
            {
                open++;
            }
        }
        for (var r = 0; r < _window!.Length; r++)
        {
            if (_window[r] is { } w && WindowPool.Count < 8)
            {
                // Only the rank's window was counted into.
                Array.Clear(w, 0, _windowWidth![r] * LowBuckets);
                WindowPool.Add(w);
            }
        }
        (_window, _below, _inside, _windowFirst, _windowWidth) = (null, null, null, null, null);
        _pass = open == 0 ? Pass.Done : Pass.High;
        _high = open == 0 ? null : new long[HighBuckets];
    }

    /// <param name="reuse">Count into this instance's spare histograms (only when called from one thread at a time).</param>
    private void Count<T>(void* x, void* b, long start, long end, bool reuse)
        where T : struct, IElementFormat
    {
        switch (_pass)
        {
            case Pass.Window:
                CountWindows<T>(x, b, start, end);
                return;
            case Pass.High:
            {
                var local = Histogram(reuse, ref _spareHigh, HighBuckets);
                CountHigh<T>(x, b, start, end, local, Histogram(reuse, ref _spareHighSecond, HighBuckets));
                lock (_merge)
                {
                    for (var i = 0; i < local.Length; i++)
                    {
                        _high![i] += local[i];
                    }
                }
                return;
            }
            default:
                for (var r = 0; r < _ranks.Length; r++)
                {
                    if (_low![r] is not { } low)
                    {
                        continue;
                    }
                    var local = Histogram(reuse, ref _spareLow, LowBuckets);
                    if (CountLow<T>(x, b, start, end, _prefix[r], local))
                    {
                        lock (_merge)
                        {
                            for (var i = 0; i < local.Length; i++)
                            {
                                low[i] += local[i];
                            }
                        }
                    }
                }
                return;
        }
    }

    /// <summary>
    /// Picks each rank's window from a strided sample of the first block's keys: the high buckets holding the sample
    /// keys within <see cref="WindowSigmas"/> standard deviations of the rank's quantile, plus <see cref="WindowMargin"/>
    /// each side, at most <see cref="WindowBuckets"/> (then centred on the quantile's bucket). A narrow window counts
    /// fewer keys into its histogram (the costly part of the pass); one the rank misses costs the two classic passes.
    /// False (no window pass) for tensors too small to gain from it or too large for 32-bit counts.
    /// </summary>
    private bool ChooseWindows<T>(void* x, void* b, long n)
        where T : struct, IElementFormat
    {
        if (_elementCount < WindowMinElements || _elementCount > uint.MaxValue || n < Vector256<float>.Count)
        {
            return false;
        }
        var vectors = n / Vector256<float>.Count;
        var stride = Math.Max(1, vectors * Vector256<float>.Count / SampleElements);
        var sample = new long[HighBuckets];
        long sampled = 0;
        for (var v = 0L; v < vectors; v += stride)
        {
            var high = Keys<T>(x, b, v * Vector256<float>.Count) >>> 16;
            for (var lane = 0; lane < Vector256<uint>.Count; lane++)
            {
                sample[high.GetElement(lane)]++;
            }
            sampled += Vector256<uint>.Count;
        }
        _windowFirst = new int[_ranks.Length];
        _windowWidth = new int[_ranks.Length];
        _below = new long[_ranks.Length];
        _inside = new long[_ranks.Length];
        _window = new uint[_ranks.Length][];
        for (var r = 0; r < _ranks.Length; r++)
        {
            var p = (double)_ranks[r] / _elementCount;
            var spread = (WindowSigmas * Math.Sqrt(p * (1 - p) * sampled)) + 1;
            var wanted = Math.Clamp((long)Math.Ceiling(p * sampled), 1, sampled);
            var lowest = Math.Clamp((long)Math.Floor((p * sampled) - spread), 1, sampled);
            var highest = Math.Clamp((long)Math.Ceiling((p * sampled) + spread), 1, sampled);
            var bucket = Find(sample, ref wanted);
            var first = Find(sample, ref lowest) - WindowMargin;
            var last = Find(sample, ref highest) + WindowMargin;
            if (last - first + 1 > WindowBuckets)
            {
                (first, last) = (bucket - WindowRadius, bucket + WindowRadius);
            }
            _windowWidth[r] = last - first + 1;
            _windowFirst[r] = Math.Clamp(first, 0, HighBuckets - _windowWidth[r]);
            _window[r] = WindowPool.TryTake(out var pooled) ? pooled : new uint[WindowBuckets * LowBuckets];
        }
        return true;
    }

    /// <summary>
    /// Window pass: per rank, counts the keys below its window (vector compare and popcount) and the low bits of the keys
    /// inside it (the few hits batched, then added under the lock).
    /// </summary>
    private void CountWindows<T>(void* x, void* b, long start, long end)
        where T : struct, IElementFormat
    {
        const int Batch = 4096;
        var batch = stackalloc uint[Batch];
        for (var r = 0; r < _ranks.Length; r++)
        {
            var first = (uint)_windowFirst![r];
            var width = (uint)_windowWidth![r];
            var counts = _window![r]!;
            var taken = 0;
            long below = 0;
            long inside = 0;
            var e = start;
            if (Vector256.IsHardwareAccelerated)
            {
                var firstV = Vector256.Create(first);
                var widthV = Vector256.Create(width);
                var lowMask = Vector256.Create(0xFFFFu);
                for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
                {
                    var keys = Keys<T>(x, b, e);
                    var high = keys >>> 16;
                    below += BitOperations.PopCount(Vector256.LessThan(high, firstV).ExtractMostSignificantBits());
                    // (high - first) < width as unsigned: inside the window.
                    var offset = high - firstV;
                    var hits = Vector256.LessThan(offset, widthV).ExtractMostSignificantBits();
                    if (hits == 0)
                    {
                        continue;
                    }
                    if (taken > Batch - Vector256<uint>.Count)
                    {
                        inside += taken;
                        Flush(counts, batch, taken);
                        taken = 0;
                    }
                    var packed = (offset << 16) | (keys & lowMask);
                    while (hits != 0)
                    {
                        batch[taken++] = packed.GetElement(BitOperations.TrailingZeroCount(hits));
                        hits &= hits - 1;
                    }
                }
            }
            for (; e < end; e++)
            {
                var key = Key<T>(x, b, e);
                var high = key >> 16;
                if (high < first)
                {
                    below++;
                    continue;
                }
                if (high - first < width)
                {
                    if (taken == Batch)
                    {
                        inside += taken;
                        Flush(counts, batch, taken);
                        taken = 0;
                    }
                    batch[taken++] = ((high - first) << 16) | (key & 0xFFFF);
                }
            }
            inside += taken;
            Flush(counts, batch, taken);
            lock (_merge)
            {
                _below![r] += below;
                _inside![r] += inside;
            }
        }
    }

    private void Flush(uint[] counts, uint* batch, int taken)
    {
        if (taken == 0)
        {
            return;
        }
        lock (_merge)
        {
            for (var i = 0; i < taken; i++)
            {
                counts[batch[i]]++;
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
    private static void CountHigh<T>(void* x, void* b, long start, long end, uint[] hist, uint[] second)
        where T : struct, IElementFormat
    {
        var e = start;
        if (Vector256.IsHardwareAccelerated)
        {
            fixed (uint* h0 = hist, h1 = second)
            {
                for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
                {
                    var high = Keys<T>(x, b, e) >>> 16;
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
            hist[Key<T>(x, b, e) >> 16]++;
        }
    }

    /// <summary>Counts the low bits of keys whose high bits equal <paramref name="prefix"/>; false when none did.</summary>
    private static bool CountLow<T>(void* x, void* b, long start, long end, uint prefix, uint[] hist)
        where T : struct, IElementFormat
    {
        var any = false;
        var e = start;
        if (Vector256.IsHardwareAccelerated)
        {
            var wanted = Vector256.Create(prefix);
            for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
            {
                var keys = Keys<T>(x, b, e);
                var hits = Vector256.Equals(keys >>> 16, wanted).ExtractMostSignificantBits();
                while (hits != 0)
                {
                    var lane = BitOperations.TrailingZeroCount(hits);
                    hist[keys.GetElement(lane) & 0xFFFF]++;
                    hits &= hits - 1;
                    any = true;
                }
            }
        }
        for (; e < end; e++)
        {
            var key = Key<T>(x, b, e);
            if (key >> 16 == prefix)
            {
                hist[key & 0xFFFF]++;
                any = true;
            }
        }
        return any;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Keys<T>(void* x, void* b, long e)
        where T : struct, IElementFormat
    {
        var v = T.Load(x, e);
        if (b is not null)
        {
            v -= T.Load(b, e);
        }
        return v.AsUInt32() & Vector256.Create(0x7FFF_FFFFu);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Key<T>(void* x, void* b, long e)
        where T : struct, IElementFormat =>
        BitConverter.SingleToUInt32Bits(b is null ? T.LoadOne(x, e) : T.LoadOne(x, e) - T.LoadOne(b, e)) & 0x7FFF_FFFF;

    /// <summary>The bucket holding the <paramref name="remaining"/>-th key (1-based); leaves the rank within that bucket.</summary>
    private static int Find<T>(ReadOnlySpan<T> hist, ref long remaining)
        where T : IBinaryInteger<T>
    {
        for (var i = 0; i < hist.Length; i++)
        {
            var count = long.CreateTruncating(hist[i]);
            if (remaining <= count)
            {
                return i;
            }
            remaining -= count;
        }
        throw new InvalidOperationException("radix select ran past the last bucket (an input changed between passes, or a block was missed)");
    }
}
