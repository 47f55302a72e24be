using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace SensMerging.Strategies.Common;

/// <summary>
/// The per-element math of generalized task arithmetic on contiguous memory (float32 or bfloat16, computed in float32
/// registers either way), in one pass: every model's
/// sparsified delta (magnitude band, counter-based random drop, rescale) in vector registers, the weighted sum or the
/// TIES sign election, and the output. 256-bit vectors with a scalar tail that computes the same operations in the
/// same order, so results do not depend on alignment, vector width or chunking. The configuration (per-model
/// thresholds, random keys) is set once per tensor; <see cref="Run"/> is called per block.
/// </summary>
internal sealed unsafe class TaskArithmeticKernel
{
    /// <summary>Elements per parallel work item (a multiple of every vector width).</summary>
    private const long Chunk = 1L << 20;

    public TaskArithmeticKernel(int count)
    {
        Count = count;
        Weights = new float[count];
        Lower = new float[count];
        Upper = new float[count];
        Scale = new float[count];
        RandomKey = new ulong[count];
        RandomThreshold = new uint[count];
        Keep = new KeepBits?[count];
        Array.Fill(Lower, float.NegativeInfinity);
        Array.Fill(Upper, float.PositiveInfinity);
        Array.Fill(Scale, 1f);
        Array.Fill(RandomThreshold, 1u << 24);
    }

    public int Count { get; }

    /// <summary>Per-model weight.</summary>
    public float[] Weights { get; }

    /// <summary>Per-model magnitude band: deltas with |d| below Lower or above Upper are dropped (NaN kept).</summary>
    public float[] Lower { get; }

    /// <inheritdoc cref="Lower"/>
    public float[] Upper { get; }

    /// <summary>Per-model factor on kept deltas; 0 drops the model entirely.</summary>
    public float[] Scale { get; }

    /// <summary>Per-model <see cref="CounterRandom"/> stream key (when <see cref="Random"/>).</summary>
    public ulong[] RandomKey { get; }

    /// <summary>Per-model keep threshold on the 24-bit uniform value (when <see cref="Random"/>).</summary>
    public uint[] RandomThreshold { get; }

    /// <summary>
    /// Per model, where set: its random draws kept as bits. <see cref="AddL1"/> writes them as it draws, and the merge
    /// reads them instead of drawing again (the caller owns and disposes them).
    /// </summary>
    public KeepBits?[] Keep { get; }

    /// <summary>Random drop (DARE) on.</summary>
    public bool Random { get; set; }

    /// <summary>TIES sign election on.</summary>
    public bool Consensus { get; set; }

    /// <summary>With consensus: divide each entry by the weights kept there.</summary>
    public bool Normalize { get; set; }

    /// <summary>Scale of the merged task vector (consensus).</summary>
    public float Lambda { get; set; }

    /// <summary>Scale of the summed task vector without consensus (lambda, divided by the weight sum when normalizing).</summary>
    public float OutputScale { get; set; }

    /// <summary>
    /// Merges <paramref name="n"/> elements stored as <typeparamref name="T"/> (base, models and output alike).
    /// <paramref name="models"/> holds one pointer per model; <paramref name="randomOffset"/> is added to the element
    /// index for the random stream. The math is float32 for every format, so a bfloat16 merge gives the bits of the
    /// float32 merge of the widened inputs, rounded once.
    /// </summary>
    public void Run<T>(void* baseValues, nint[] models, void* output, long n, long randomOffset)
        where T : struct, IElementFormat
    {
        var chunks = (n + Chunk - 1) / Chunk;
        if (chunks <= 1)
        {
            Run<T>(baseValues, models, output, 0, n, randomOffset);
            return;
        }
        Parallel.For(0L, chunks, c => Run<T>(baseValues, models, output, c * Chunk, Math.Min(n, (c + 1) * Chunk), randomOffset));
    }

    private void Run<T>(void* baseValues, nint[] models, void* output, long start, long end, long randomOffset)
        where T : struct, IElementFormat
    {
        var count = Count;
        var e = start;
        if (Vector256.IsHardwareAccelerated)
        {
            // Per-model settings broadcast once per call (the arrays are re-read on every element otherwise), and each
            // model's weighted contribution w_i * d_i kept for the sign election's second loop (the same product the
            // scalar path computes twice, so the bits agree).
            Span<ModelVectors> settings = count <= 16 ? stackalloc ModelVectors[count] : new ModelVectors[count];
            Span<Vector256<float>> contributions = count <= 32 ? stackalloc Vector256<float>[count] : new Vector256<float>[count];
            for (var i = 0; i < count; i++)
            {
                settings[i] = new ModelVectors(Weights[i], Lower[i], Upper[i], Scale[i], RandomKey[i], RandomThreshold[i], Keep[i] is { } keep ? keep.Pointer : null);
            }
            var outputScale = Vector256.Create(OutputScale);
            var lambda = Vector256.Create(Lambda);
            for (; e + Vector256<float>.Count <= end; e += Vector256<float>.Count)
            {
                var b = T.Load(baseValues, e);
                var sum = Vector256<float>.Zero;
                for (var i = 0; i < count; i++)
                {
                    ref readonly var m = ref settings[i];
                    var c = m.Weight * DeltaVector<T>(in m, (void*)models[i], e, b, randomOffset);
                    contributions[i] = c;
                    sum += c;
                }
                if (!Consensus)
                {
                    T.Store(b + (sum * outputScale), output, e);
                    continue;
                }
                var elected = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(sum, Vector256<float>.Zero), Vector256<float>.One, -Vector256<float>.One);
                var kept = Vector256<float>.Zero;
                var divisor = Vector256<float>.Zero;
                for (var i = 0; i < count; i++)
                {
                    var contribution = contributions[i];
                    var agree = Vector256.GreaterThan(contribution * elected, Vector256<float>.Zero);
                    kept += contribution & agree;
                    divisor += settings[i].Weight & agree;
                }
                if (Normalize)
                {
                    kept = Vector256.ConditionalSelect(Vector256.Equals(divisor, Vector256<float>.Zero), kept, kept / divisor);
                }
                T.Store(b + (lambda * kept), output, e);
            }
        }
        Span<float> scalarDeltas = count <= 64 ? stackalloc float[count] : new float[count];
        for (; e < end; e++)
        {
            var b = T.LoadOne(baseValues, e);
            var sum = 0f;
            for (var i = 0; i < count; i++)
            {
                var d = Delta(i, T.LoadOne((void*)models[i], e), b, e + randomOffset);
                scalarDeltas[i] = d;
                sum += Weights[i] * d;
            }
            if (!Consensus)
            {
                T.StoreOne(b + (sum * OutputScale), output, e);
                continue;
            }
            var elected = sum >= 0 ? 1f : -1f;
            var kept = 0f;
            var divisor = 0f;
            for (var i = 0; i < count; i++)
            {
                var contribution = Weights[i] * scalarDeltas[i];
                if (contribution * elected > 0)
                {
                    kept += contribution;
                    divisor += Weights[i];
                }
            }
            if (Normalize && divisor != 0)
            {
                kept /= divisor;
            }
            T.StoreOne(b + (Lambda * kept), output, e);
        }
    }

    /// <summary>
    /// Adds model <paramref name="i"/>'s |delta| (into <paramref name="totalLanes"/>) and |delta| of the entries its band
    /// and random drop keep (into <paramref name="keptLanes"/>) over <paramref name="n"/> elements starting at position
    /// <paramref name="start"/> of the whole tensor: the norms of mergekit's L1 rescale. Each element goes, in double, to
    /// lane <c>position mod 8</c> in ascending position order, so the lane sums (and the rescale factor) are the same
    /// however the tensor is cut into blocks. The keep rule is <see cref="Delta"/>'s, so the merge keeps exactly what was
    /// counted; the vector body and the scalar head and tail agree.
    /// </summary>
    public void AddL1<T>(int i, void* baseValues, void* model, long n, long start, double[] totalLanes, double[] keptLanes)
        where T : struct, IElementFormat
    {
        var lower = Lower[i];
        var upper = Upper[i];
        long e = 0;
        for (; e < n && ((start + e) & 7) != 0; e++)
        {
            AddL1One<T>(i, baseValues, model, e, start, totalLanes, keptLanes);
        }
        if (Vector256.IsHardwareAccelerated && e + Vector256<float>.Count <= n)
        {
            var low = Vector256.Create(lower);
            var high = Vector256.Create(upper);
            var total0 = Vector256.Create(totalLanes[0], totalLanes[1], totalLanes[2], totalLanes[3]);
            var total1 = Vector256.Create(totalLanes[4], totalLanes[5], totalLanes[6], totalLanes[7]);
            var kept0 = Vector256.Create(keptLanes[0], keptLanes[1], keptLanes[2], keptLanes[3]);
            var kept1 = Vector256.Create(keptLanes[4], keptLanes[5], keptLanes[6], keptLanes[7]);
            var key = RandomKey[i];
            var threshold = RandomThreshold[i];
            var bits = Keep[i];
            for (; e + Vector256<float>.Count <= n; e += Vector256<float>.Count)
            {
                var magnitude = Vector256.Abs(T.Load(model, e) - T.Load(baseValues, e));
                var keep = ~(Vector256.LessThan(magnitude, low) | Vector256.GreaterThan(magnitude, high));
                if (Random)
                {
                    var drawn = RandomKeep(key, threshold, start + e);
                    bits?.Write(start + e, drawn.ExtractMostSignificantBits(), Vector256<float>.Count);
                    keep &= drawn;
                }
                var (magnitudeLow, magnitudeHigh) = Vector256.Widen(magnitude);
                var (keptLow, keptHigh) = Vector256.Widen(magnitude & keep);
                total0 += magnitudeLow;
                total1 += magnitudeHigh;
                kept0 += keptLow;
                kept1 += keptHigh;
            }
            total0.CopyTo(totalLanes, 0);
            total1.CopyTo(totalLanes, 4);
            kept0.CopyTo(keptLanes, 0);
            kept1.CopyTo(keptLanes, 4);
        }
        for (; e < n; e++)
        {
            AddL1One<T>(i, baseValues, model, e, start, totalLanes, keptLanes);
        }
    }

    private void AddL1One<T>(int i, void* baseValues, void* model, long e, long start, double[] totalLanes, double[] keptLanes)
        where T : struct, IElementFormat
    {
        var lane = (int)((start + e) & 7);
        var magnitude = MathF.Abs(T.LoadOne(model, e) - T.LoadOne(baseValues, e));
        totalLanes[lane] += magnitude;
        var drawn = !Random || CounterRandom.Uniform24(RandomKey[i], start + e) < RandomThreshold[i];
        if (Random)
        {
            Keep[i]?.Write(start + e, drawn ? 1u : 0u, 1);
        }
        if (magnitude < Lower[i] || magnitude > Upper[i] || !drawn)
        {
            return;
        }
        keptLanes[lane] += magnitude;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Vector256<float> DeltaVector<T>(in ModelVectors m, void* x, long e, Vector256<float> b, long randomOffset)
        where T : struct, IElementFormat
    {
        if (m.Dropped)
        {
            return Vector256<float>.Zero;
        }
        var d = T.Load(x, e) - b;
        if (m.HasLower || m.HasUpper)
        {
            var magnitude = Vector256.Abs(d);
            var outside = m.HasLower ? Vector256.LessThan(magnitude, m.Lower) : Vector256<float>.Zero;
            if (m.HasUpper)
            {
                outside |= Vector256.GreaterThan(magnitude, m.Upper);
            }
            d = Vector256.AndNot(d, outside);
        }
        if (Random)
        {
            d &= m.Keep != null
                ? FloatLanes8.Mask(KeepBits.Read(m.Keep, e + randomOffset, Vector256<float>.Count))
                : RandomKeep(m.RandomKey, m.RandomThreshold, e + randomOffset);
        }
        return m.Scaled ? d * m.Scale : d;
    }

    /// <summary>All-ones lanes where the random value of elements index..index+7 is below the threshold.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> RandomKeep(ulong key, uint threshold, long index) =>
        Vector256.LessThan(CounterRandom.Uniform24x8(key, index), Vector256.Create(threshold)).AsSingle();

    private float Delta(int i, float x, float b, long index)
    {
        var scale = Scale[i];
        if (scale == 0f)
        {
            return 0f;
        }
        var d = x - b;
        var magnitude = MathF.Abs(d);
        if (magnitude < Lower[i] || magnitude > Upper[i])
        {
            return 0f;
        }
        if (Random && CounterRandom.Uniform24(RandomKey[i], index) >= RandomThreshold[i])
        {
            return 0f;
        }
        return d * scale;
    }

    /// <summary>One model's settings as vectors and flags, for the vector loop.</summary>
    private readonly unsafe struct ModelVectors(float weight, float lower, float upper, float scale, ulong randomKey, uint randomThreshold, byte* keep)
    {
        public Vector256<float> Weight { get; } = Vector256.Create(weight);

        public Vector256<float> Lower { get; } = Vector256.Create(lower);

        public Vector256<float> Upper { get; } = Vector256.Create(upper);

        public Vector256<float> Scale { get; } = Vector256.Create(scale);

        public ulong RandomKey { get; } = randomKey;

        public uint RandomThreshold { get; } = randomThreshold;

        /// <summary>The model's kept draws (<see cref="Keep"/>), or null to draw them.</summary>
        public byte* Keep { get; } = keep;

        /// <summary>Scale 0: the model contributes nothing.</summary>
        public bool Dropped { get; } = scale == 0f;

        /// <summary>A magnitude band with a lower end (|d| below it dropped).</summary>
        public bool HasLower { get; } = lower != float.NegativeInfinity;

        /// <summary>A magnitude band with an upper end (|d| above it dropped).</summary>
        public bool HasUpper { get; } = upper != float.PositiveInfinity;

        /// <summary>Kept deltas are multiplied by <see cref="Scale"/>.</summary>
        public bool Scaled { get; } = scale != 1f;
    }
}
