using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// <see cref="HalfPrecisionTaskArithmetic"/>'s computation for bfloat16, fused into managed passes over the bit
/// patterns instead of one libtorch operation (and one fresh buffer) per step: the same float32 operation for every
/// step mergekit's torch performs, each result rounded to bfloat16 (nearest, ties to even) where torch rounds it, sums
/// over the models accumulated in float32 from zero in model order and rounded once, as torch's reduction does. The
/// bits equal the libtorch path's (tested bit for bit against it, signed zeros included) at a fraction of its time.
/// <para>Covers task_arithmetic, ties, breadcrumbs, breadcrumbs_ties, dare_ties and dare_linear (no sparsification,
/// magnitude bands or DARE's counter-stream drops), whole (contiguous bfloat16 inputs and output) or streamed in blocks
/// (<see cref="Session"/>), mergekit's L1 rescale included (its norms summed in position-keyed float64 lanes, the
/// value <see cref="TaskArithmeticSettings.L1RescaleFactorInDType"/> defines). DELLA and float16 stay on the libtorch
/// path.</para>
/// </summary>
internal static class BFloat16TaskArithmetic
{
    /// <summary>Whether this request can take the fused path: <see cref="Fits"/>, with contiguous CPU bfloat16 tensors.</summary>
    public static bool Applies(MergeTensorRequest request, TaskArithmeticVariant variant, TaskArithmeticSettings settings)
    {
        if (request.ComputeDType != ScalarType.BFloat16 || request.Base is null || !IsPlainBFloat16(request.Output) || !IsPlainBFloat16(request.Base))
        {
            return false;
        }
        return request.Models.All(IsPlainBFloat16) && Fits(variant, settings);
    }

    /// <summary>
    /// Whether the fused passes cover the method and its settings: no sparsification, magnitude bands or DARE's random
    /// drops, with or without the L1 rescale (DELLA's row ranks are not covered). A <see cref="Session"/> takes such a
    /// tensor in blocks of any size.
    /// </summary>
    public static bool Fits(TaskArithmeticVariant variant, TaskArithmeticSettings settings) =>
        variant.Sparsification is SparsificationMethod.None or SparsificationMethod.Magnitude or SparsificationMethod.MagnitudeOutliers or SparsificationMethod.Random;

    private static bool IsPlainBFloat16(Tensor tensor) =>
        tensor.dtype == ScalarType.BFloat16 && tensor.device_type == DeviceType.CPU && tensor.is_contiguous() && tensor.numel() > 0;

    /// <summary>
    /// Merges the request's tensor into its output (call only when <see cref="Applies"/>): <see cref="Session"/> over the
    /// tensor as one block. The task vectors are never stored: a model's magnitude bounds come from a histogram of its
    /// rounded deltas' magnitudes (a bfloat16 magnitude is its 15 low bits, whose integer order is the magnitudes' order,
    /// so 32768 buckets give the k-th exactly, ties kept as the libtorch path keeps them), and the combination pass
    /// computes each delta again from the inputs.
    /// </summary>
    public static void Merge(MergeTensorRequest request, TaskArithmeticVariant variant, TaskArithmeticSettings settings, long randomSeed)
    {
        using var session = new Session(variant, settings, request.Output.numel(), request.TensorName, randomSeed);
        WholeTensor.Run(session, request);
    }

    /// <summary>
    /// Counts into <paramref name="histogram"/> (<see cref="MagnitudeSelect.RentHistogram"/> of
    /// <see cref="FloatLanes.HistogramCopies"/> copies) how many elements have each 15-bit magnitude
    /// key of bf16(x - base). Neighbouring elements of a task vector often share a key; counting the lanes of a vector into
    /// four copies of the buckets keeps each increment from waiting on the one before.
    /// </summary>
    private static unsafe void MagnitudeHistogram(ushort* x, ushort* b, long n, long[] histogram)
    {
        var j = FloatLanes.Sixteen ? MagnitudeHistogramVectors<FloatLanes16>(x, b, n, histogram)
            : Vector256.IsHardwareAccelerated ? MagnitudeHistogramVectors<FloatLanes8>(x, b, n, histogram) : 0;
        for (; j < n; j++)
        {
            histogram[Delta(x[j], b[j]) & 0x7FFF]++;
        }
    }

    /// <summary><see cref="MagnitudeHistogram"/> a vector at a time; returns how many elements it counted (a multiple of the width).</summary>
    // Compiled optimized from the first call: a merge runs in a process of its own, and these loops are its hot path.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe long MagnitudeHistogramVectors<TLanes>(ushort* x, ushort* b, long n, long[] histogram)
        where TLanes : unmanaged, IFloatLanes<TLanes>
    {
        // Keys are 15-bit plus a copy's offset, inside the histogram: no bounds checks needed. The keys go through a stack
        // buffer (plain loads are cheaper than extracting lanes).
        ref var counts = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(histogram);
        var keys = stackalloc uint[16];
        long j = 0;
        for (; j + TLanes.Count <= n; j += TLanes.Count)
        {
            TLanes.StoreMagnitudeKeys(TLanes.Round(TLanes.LoadBFloat16(x + j) - TLanes.LoadBFloat16(b + j)), keys, MagnitudeSelect.HalfKeys);
            for (var k = 0; k < TLanes.Count; k += 8)
            {
                Unsafe.Add(ref counts, keys[k])++;
                Unsafe.Add(ref counts, keys[k + 1])++;
                Unsafe.Add(ref counts, keys[k + 2])++;
                Unsafe.Add(ref counts, keys[k + 3])++;
                Unsafe.Add(ref counts, keys[k + 4])++;
                Unsafe.Add(ref counts, keys[k + 5])++;
                Unsafe.Add(ref counts, keys[k + 6])++;
                Unsafe.Add(ref counts, keys[k + 7])++;
            }
        }
        return j;
    }

    /// <summary>The <paramref name="k"/>-th smallest magnitude (1-based) of a <see cref="MagnitudeHistogram"/>.</summary>
    private static float KthSmallest(long[] histogram, long k)
    {
        for (var key = 0; key < MagnitudeSelect.HalfKeys; key++)
        {
            long count = 0;
            for (var copy = 0; copy < FloatLanes.HistogramCopies; copy++)
            {
                count += histogram[(copy * MagnitudeSelect.HalfKeys) + key];
            }
            if (k <= count)
            {
                return BFloat16Bits.ToSingle((ushort)key);
            }
            k -= count;
        }
        throw new InvalidOperationException("magnitude rank beyond the tensor's size");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort Delta(ushort x, ushort b) => BFloat16Bits.FromSingle(BFloat16Bits.ToSingle(x) - BFloat16Bits.ToSingle(b));

    /// <summary>The per-model weights as torch rounds them to a bfloat16 tensor (double to bfloat16), widened.</summary>
    private static float[] RoundedWeights(double[] weights)
    {
        using var requested = TorchSharp.torch.tensor(weights, ScalarType.Float64);
        using var rounded = requested.to(ScalarType.BFloat16);
        using var widened = rounded.to(ScalarType.Float32);
        return widened.data<float>().ToArray();
    }

    /// <summary>task_arithmetic's divisor: the weights' sum (float32 from zero, rounded), 1 where it is below 1e-8 in magnitude.</summary>
    private static float PlainDivisor(float[] weights)
    {
        var sum = 0f;
        foreach (var w in weights)
        {
            sum += w;
        }
        var divisor = Round(sum);
        return Math.Abs(divisor) < TaskArithmeticSettings.ZeroDivisor ? 1f : divisor;
    }

    /// <summary>What the combination needs, fixed for the tensor.</summary>
    /// <remarks>
    /// Per model: the magnitude band (Lower, Upper), DARE's keep stream (RandomKey, RandomThreshold; threshold 0: no
    /// random drop) and its draws where a statistics pass kept them (Keep), and the L1 rescale factor (Factor, applied
    /// where Rescaled).
    /// </remarks>
    private sealed record Plan(int Count, float[] Weights, float[] Lower, float[] Upper, bool[] Drop, bool Consensus, bool Normalize, float? Lambda, float PlainDivisor,
        ulong[] RandomKey, uint[] RandomThreshold, bool[] Random, KeepBits?[] Keep, float[] Factor, bool[] Rescaled);

    /// <summary>Per element: each model's band mask and weight, then the sum or sign election, divisor, lambda and base.</summary>
    private static unsafe void Combine(Plan plan, IntPtr[] inputs, long n, ushort* basePtr, ushort* output, long elementStart)
    {
        var j = FloatLanes.Sixteen ? CombineVectors<FloatLanes16>(plan, inputs, n, basePtr, output, elementStart)
            : Vector256.IsHardwareAccelerated ? CombineVectors<FloatLanes8>(plan, inputs, n, basePtr, output, elementStart) : 0;
        Span<float> terms = stackalloc float[plan.Count];
        for (; j < n; j++)
        {
            for (var i = 0; i < plan.Count; i++)
            {
                terms[i] = Weighted(plan, i, BFloat16Bits.ToSingle(Delta(((ushort*)inputs[i])[j], basePtr[j])), elementStart + j);
            }
            float mixed;
            float divisor;
            if (plan.Consensus)
            {
                var sum = 0f;
                for (var i = 0; i < plan.Count; i++)
                {
                    sum += terms[i];
                }
                // torch: sum(0) rounded, then (>= 0) as the dtype, * 2 - 1.
                var majority = Round(sum) >= 0f ? 1f : -1f;
                var kept = 0f;
                var weight = 0f;
                for (var i = 0; i < plan.Count; i++)
                {
                    // sign(d) == majority; a zero's sign is 0 and never agrees. A disagreeing term times 0 keeps its sign.
                    var agree = Sign(terms[i]) == majority ? 1f : 0f;
                    kept += terms[i] * agree;
                    weight += plan.Weights[i] * agree;
                }
                mixed = Round(kept);
                divisor = Round(weight);
                if (divisor == 0f)
                {
                    divisor = 1f;
                }
            }
            else
            {
                var sum = 0f;
                for (var i = 0; i < plan.Count; i++)
                {
                    sum += terms[i];
                }
                mixed = Round(sum);
                divisor = plan.PlainDivisor;
            }
            if (plan.Normalize)
            {
                mixed = Round(mixed / divisor);
            }
            if (plan.Lambda is { } lambda)
            {
                mixed = Round(mixed * lambda);
            }
            output[j] = BFloat16Bits.FromSingle(BFloat16Bits.ToSingle(basePtr[j]) + mixed);
        }
    }

    /// <summary>
    /// <see cref="Combine"/> a vector at a time, lane by lane the same float32 operations in the same order (so the same
    /// bits); returns how many elements it did (a multiple of the width).
    /// </summary>
    // Compiled optimized from the first call: a merge runs in a process of its own, and these loops are its hot path.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe long CombineVectors<TLanes>(Plan plan, IntPtr[] inputs, long n, ushort* basePtr, ushort* output, long elementStart)
        where TLanes : unmanaged, IFloatLanes<TLanes>
    {
        var count = plan.Count;
        Span<TLanes> terms = stackalloc TLanes[count];
        Span<ModelLanes<TLanes>> models = stackalloc ModelLanes<TLanes>[count];
        for (var i = 0; i < count; i++)
        {
            models[i] = new ModelLanes<TLanes>
            {
                Weight = TLanes.Create(plan.Weights[i]),
                Lower = TLanes.Create(plan.Lower[i]),
                Upper = TLanes.Create(plan.Upper[i]),
                Factor = TLanes.Create(plan.Factor[i]),
                Threshold = plan.RandomThreshold[i],
                Key = plan.RandomKey[i],
                Keep = plan.Keep[i] is { } keep ? keep.Pointer : null,
                Drop = plan.Drop[i],
                HasLower = !float.IsNegativeInfinity(plan.Lower[i]),
                HasUpper = !float.IsPositiveInfinity(plan.Upper[i]),
                Random = plan.Random[i],
                Rescaled = plan.Rescaled[i],
            };
        }
        var one = TLanes.Create(1f);
        var zero = TLanes.Zero;
        var lambda = TLanes.Create(plan.Lambda ?? 1f);
        var scalesByLambda = plan.Lambda is not null;
        var plainDivisor = TLanes.Create(plan.PlainDivisor);
        long j = 0;
        for (; j + TLanes.Count <= n; j += TLanes.Count)
        {
            var baseValues = TLanes.LoadBFloat16(basePtr + j);
            for (var i = 0; i < count; i++)
            {
                ref readonly var m = ref models[i];
                var delta = TLanes.Round(TLanes.LoadBFloat16((ushort*)inputs[i] + j) - baseValues);
                if (m.Drop)
                {
                    delta = zero;
                }
                else
                {
                    // Each mask a multiplication by 1 or 0, as torch's (a NaN stays NaN, a dropped infinity becomes NaN).
                    if (m.HasLower)
                    {
                        delta *= TLanes.Select(TLanes.GreaterThanOrEqual(TLanes.Abs(delta), m.Lower), one, zero);
                    }
                    if (m.HasUpper)
                    {
                        delta *= TLanes.Select(TLanes.LessThanOrEqual(TLanes.Abs(delta), m.Upper), one, zero);
                    }
                    if (m.Random)
                    {
                        var keep = m.Keep != null
                            ? TLanes.MaskFromBits(KeepBits.Read(m.Keep, elementStart + j, TLanes.Count))
                            : TLanes.RandomKeep(m.Key, elementStart + j, m.Threshold);
                        delta *= TLanes.Select(keep, one, zero);
                    }
                    if (m.Rescaled)
                    {
                        delta = TLanes.Round(delta * m.Factor);
                    }
                }
                terms[i] = TLanes.Round(delta * m.Weight);
            }
            TLanes mixed;
            TLanes divisor;
            var sum = zero;
            for (var i = 0; i < count; i++)
            {
                sum += terms[i];
            }
            if (plan.Consensus)
            {
                var positive = TLanes.GreaterThanOrEqual(TLanes.Round(sum), zero);
                var kept = zero;
                var weight = zero;
                for (var i = 0; i < count; i++)
                {
                    // sign(term) == majority (a zero or NaN term never agrees), as 1 or 0: multiplied, as torch does, so a
                    // disagreeing NaN or infinite term still makes the sum NaN.
                    var agree = TLanes.Select(TLanes.Select(positive, TLanes.GreaterThan(terms[i], zero), TLanes.LessThan(terms[i], zero)), one, zero);
                    kept += terms[i] * agree;
                    weight += models[i].Weight * agree;
                }
                mixed = TLanes.Round(kept);
                divisor = TLanes.Round(weight);
                divisor = TLanes.Select(TLanes.Equal(divisor, zero), one, divisor);
            }
            else
            {
                mixed = TLanes.Round(sum);
                divisor = plainDivisor;
            }
            if (plan.Normalize)
            {
                mixed = TLanes.Round(mixed / divisor);
            }
            if (scalesByLambda)
            {
                mixed = TLanes.Round(mixed * lambda);
            }
            TLanes.StoreBFloat16(baseValues + mixed, output + j);
        }
        return j;
    }

    /// <summary>One model's constants of <see cref="Plan"/> as vectors, set once per combination.</summary>
    private unsafe struct ModelLanes<TLanes>
        where TLanes : unmanaged, IFloatLanes<TLanes>
    {
        public TLanes Weight;
        public TLanes Lower;
        public TLanes Upper;
        public TLanes Factor;
        public uint Threshold;
        public ulong Key;
        public byte* Keep;
        public bool Drop;
        public bool HasLower;
        public bool HasUpper;
        public bool Random;
        public bool Rescaled;
    }

    /// <summary>
    /// Model <paramref name="i"/>'s delta through its magnitude band or DARE's drop at <paramref name="index"/> (each mask a
    /// multiplication by 1 or 0, as torch's), times its L1 rescale factor (rounded) and its weight (rounded).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Weighted(Plan plan, int i, float delta, long index)
    {
        if (plan.Drop[i])
        {
            delta = 0f; // zero_()
        }
        else
        {
            if (!float.IsNegativeInfinity(plan.Lower[i]))
            {
                delta *= Math.Abs(delta) >= plan.Lower[i] ? 1f : 0f;
            }
            if (!float.IsPositiveInfinity(plan.Upper[i]))
            {
                delta *= Math.Abs(delta) <= plan.Upper[i] ? 1f : 0f;
            }
            if (plan.Random[i])
            {
                delta *= CounterRandom.Uniform24(plan.RandomKey[i], index) < plan.RandomThreshold[i] ? 1f : 0f;
            }
            if (plan.Rescaled[i])
            {
                delta = Round(delta * plan.Factor[i]);
            }
        }
        return Round(delta * plan.Weights[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sign(float value) => value > 0f ? 1f : value < 0f ? -1f : 0f;

    /// <summary>float32 rounded to bfloat16 and widened back (the value a bfloat16 tensor holds).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Round(float value) => BFloat16Bits.ToSingle(BFloat16Bits.FromSingle(value));

    /// <summary>
    /// The fused passes over one tensor seen in blocks (<see cref="ITensorMergeSession"/>): a statistics pass adds each
    /// block's rounded delta magnitudes to every trimming model's histogram (the thresholds are then exact for the whole
    /// tensor), and the combination pass is elementwise (DARE's drops keyed by the element's position in the whole
    /// tensor), so the bits do not depend on the block size; the whole-tensor <see cref="Merge"/> runs this session over a
    /// single block. With the L1 rescale one more statistics pass sums each rescaled model's magnitudes before and after
    /// its mask in position-keyed float64 lanes (<see cref="PositionLanes"/>: the same sums whatever the blocks), from
    /// which <see cref="TaskArithmeticSettings.L1RescaleFactorInDType"/> takes the factor; that pass keeps each DARE
    /// model's draws as bits (<see cref="KeepBits"/>, numel / 8 bytes per model while the session lives), which the
    /// combination pass reads instead of drawing again. Blocks whose tensors are all
    /// contiguous CPU bfloat16 are read and written in place; others (float32 holding the host's bfloat16-rounded values, or on another device) are copied to bfloat16 first,
    /// exactly, and the result copied back (correct, not fast).
    /// </summary>
    internal sealed unsafe class Session : ITensorMergeSession
    {
        private readonly TaskArithmeticVariant _variant;
        private readonly TaskArithmeticSettings _settings;
        private readonly string _tensorName;
        private readonly int _count;
        private readonly float[] _weights;
        private readonly float[] _lower;
        private readonly float[] _upper;
        private readonly bool[] _drop;
        private readonly (long Lower, long Upper)[] _ranks;
        private readonly long[]?[] _histograms;
        private readonly ulong[] _randomKey;
        private readonly uint[] _randomThreshold;
        private readonly bool[] _random;
        private readonly KeepBits?[] _keep;
        private readonly long _elements;
        private readonly bool[] _rescaled;
        private readonly float[] _factor;
        private readonly double[][] _l1Total;
        private readonly double[][] _l1Kept;
        private Phase _phase;
        private Plan? _plan;

        private enum Phase
        {
            Start,
            Histograms,
            Norms,
            Done,
        }

        /// <param name="randomSeed">The tensor's seed: DARE's stream of model i is keyed by <c>randomSeed + i</c>.</param>
        public Session(TaskArithmeticVariant variant, TaskArithmeticSettings settings, long numel, string tensorName, long randomSeed)
        {
            if (!Fits(variant, settings))
            {
                throw new ArgumentException($"{variant.Name}: tensor '{tensorName}' needs the libtorch half-precision path (DELLA)", nameof(variant));
            }
            _variant = variant;
            _settings = settings;
            _tensorName = tensorName;
            _count = settings.Weights.Length;
            _weights = RoundedWeights(settings.Weights);
            _lower = new float[_count];
            _upper = new float[_count];
            _drop = new bool[_count];
            _ranks = new (long, long)[_count];
            _histograms = new long[]?[_count];
            _randomKey = new ulong[_count];
            _randomThreshold = new uint[_count];
            _random = new bool[_count];
            _keep = new KeepBits?[_count];
            _elements = numel;
            _rescaled = new bool[_count];
            _factor = new float[_count];
            _l1Total = [.. Enumerable.Range(0, _count).Select(_ => new double[PositionLanes.Count])];
            _l1Kept = [.. Enumerable.Range(0, _count).Select(_ => new double[PositionLanes.Count])];
            for (var i = 0; i < _count; i++)
            {
                (_lower[i], _upper[i]) = (float.NegativeInfinity, float.PositiveInfinity);
                var density = settings.Densities[i];
                if (variant.Sparsification == SparsificationMethod.None || density >= 1.0)
                {
                    continue;
                }
                _rescaled[i] = settings.RescalesL1(i);
                if (variant.Sparsification == SparsificationMethod.Random)
                {
                    // DeltaSparsifier's DARE: zero_() at density 0, else the keep mask of the counter stream.
                    _drop[i] = density <= 0;
                    _random[i] = density > 0;
                    _randomKey[i] = CounterRandom.StreamKey(randomSeed + i);
                    _randomThreshold[i] = CounterRandom.Threshold(density);
                    continue;
                }
                var (lowerRank, upperRank, dropAll) = settings.MagnitudeRanks(variant, i, numel);
                _drop[i] = dropAll;
                _ranks[i] = dropAll ? (0, 0) : (lowerRank, upperRank);
            }
        }

        /// <summary>
        /// Pass 0 fills the histograms of the models that trim by magnitude; then, where the L1 rescale is on, a pass takes
        /// the norms (from a whole-tensor block); neither is needed without trimming or rescale.
        /// </summary>
        public bool BeginPass(int pass)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(pass);
            switch (_phase)
            {
                case Phase.Start:
                    for (var i = 0; i < _count; i++)
                    {
                        if (_ranks[i].Lower > 0 || _ranks[i].Upper > 0)
                        {
                            _histograms[i] = MagnitudeSelect.RentHistogram(FloatLanes.HistogramCopies);
                        }
                    }
                    if (_histograms.Any(h => h is not null))
                    {
                        _phase = Phase.Histograms;
                        return true;
                    }
                    break;
                case Phase.Histograms:
                    ReadThresholds();
                    break;
                case Phase.Norms:
                    ReadFactors();
                    Finish();
                    return false;
                case Phase.Done:
                default:
                    Finish();
                    return false;
            }
            if (_rescaled.Any(r => r) && !_drop.Where((_, i) => _rescaled[i]).All(d => d))
            {
                // The norm pass draws DARE's keep mask of each rescaled model: kept as bits for the merge pass.
                for (var i = 0; i < _count; i++)
                {
                    if (_random[i] && _rescaled[i] && !_drop[i])
                    {
                        _keep[i] = KeepBits.ForTensor(_elements);
                    }
                }
                _phase = Phase.Norms;
                return true;
            }
            Finish();
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            Check(block);
            switch (_phase)
            {
                case Phase.Histograms:
                {
                    using var bits = Bits(block, withOutput: false);
                    for (var i = 0; i < _count; i++)
                    {
                        if (_histograms[i] is { } histogram)
                        {
                            MagnitudeHistogram((ushort*)bits.Models[i], (ushort*)bits.Base, bits.Count, histogram);
                        }
                    }
                    break;
                }
                case Phase.Norms:
                    ObserveNorms(block);
                    break;
                case Phase.Start:
                case Phase.Done:
                default:
                    throw new InvalidOperationException($"{_variant.Name}: tensor '{_tensorName}' observed outside a statistics pass");
            }
        }

        public void Merge(MergeTensorRequest block)
        {
            Check(block);
            var plan = _plan ?? throw new InvalidOperationException(
                $"{_variant.Name}: tensor '{_tensorName}' merged before its statistics passes ended (call BeginPass until it returns false)");
            using var bits = Bits(block, withOutput: true);
            Combine(plan, bits.Models, bits.Count, (ushort*)bits.Base, (ushort*)bits.Output, block.ElementStart);
            bits.CopyOutputBack(block.Output);
        }

        public void Dispose()
        {
            ReturnHistograms();
            foreach (var keep in _keep)
            {
                keep?.Dispose();
            }
        }

        private void ReadThresholds()
        {
            for (var i = 0; i < _count; i++)
            {
                if (_histograms[i] is not { } histogram)
                {
                    continue;
                }
                if (_ranks[i].Lower > 0)
                {
                    _lower[i] = KthSmallest(histogram, _ranks[i].Lower);
                }
                if (_ranks[i].Upper > 0)
                {
                    _upper[i] = KthSmallest(histogram, _ranks[i].Upper);
                }
            }
            ReturnHistograms();
        }

        private void Finish()
        {
            if (_plan is not null)
            {
                return;
            }
            _phase = Phase.Done;
            _plan = new Plan(_count, _weights, _lower, _upper, _drop, _variant.Consensus == ConsensusMethod.Sum, _settings.Normalize,
                _settings.Lambda == 1.0 ? null : (float)_settings.Lambda, PlainDivisor(_weights), _randomKey, _randomThreshold, _random, _keep, _factor, _rescaled);
        }

        /// <summary>
        /// Adds the block's part of each rescaled model's L1 norms, before and after its mask: the magnitudes of the rounded
        /// deltas (the mask a multiplication by 1 or 0, as torch's: a NaN stays NaN, an infinity dropped becomes NaN) in
        /// float64 lanes keyed by the element's position in the whole tensor (<see cref="PositionLanes"/>).
        /// </summary>
        private void ObserveNorms(MergeTensorRequest block)
        {
            using var bits = Bits(block, withOutput: false);
            for (var i = 0; i < _count; i++)
            {
                if (_rescaled[i] && !_drop[i])
                {
                    AddNorms(i, (ushort*)bits.Models[i], (ushort*)bits.Base, bits.Count, block.ElementStart);
                }
            }
        }

        private void AddNorms(int i, ushort* model, ushort* basePtr, long n, long start)
        {
            long j = 0;
            for (; j < n && ((start + j) & 7) != 0; j++)
            {
                AddNormsOne(i, model, basePtr, j, start);
            }
            if (FloatLanes.Sixteen)
            {
                j += AddNormsVectors<FloatLanes16>(i, model + j, basePtr + j, n - j, start + j);
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                j += AddNormsVectors<FloatLanes8>(i, model + j, basePtr + j, n - j, start + j);
            }
            for (; j < n; j++)
            {
                AddNormsOne(i, model, basePtr, j, start);
            }
        }

        /// <summary>
        /// <see cref="AddNorms"/> a vector at a time from an element whose position is a multiple of 8; returns how many
        /// elements it added (a multiple of the width).
        /// </summary>
        // Compiled optimized from the first call: a merge runs in a process of its own, and these loops are its hot path.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private long AddNormsVectors<TLanes>(int i, ushort* model, ushort* basePtr, long n, long start)
            where TLanes : unmanaged, IFloatLanes<TLanes>
        {
            var total = _l1Total[i];
            var kept = _l1Kept[i];
            var lower = TLanes.Create(_lower[i]);
            var upper = TLanes.Create(_upper[i]);
            var threshold = _randomThreshold[i];
            var key = _randomKey[i];
            var random = _random[i];
            var bits = _keep[i];
            var one = TLanes.Create(1f);
            var total0 = Vector256.Create(total[0], total[1], total[2], total[3]);
            var total1 = Vector256.Create(total[4], total[5], total[6], total[7]);
            var kept0 = Vector256.Create(kept[0], kept[1], kept[2], kept[3]);
            var kept1 = Vector256.Create(kept[4], kept[5], kept[6], kept[7]);
            long j = 0;
            for (; j + TLanes.Count <= n; j += TLanes.Count)
            {
                var magnitude = TLanes.Abs(TLanes.Round(TLanes.LoadBFloat16(model + j) - TLanes.LoadBFloat16(basePtr + j)));
                // The same 0/1 multiplications as the combination (a NaN stays NaN, a dropped infinity becomes NaN).
                var keep = random
                    ? TLanes.RandomKeep(key, start + j, threshold)
                    : TLanes.Select(TLanes.GreaterThanOrEqual(magnitude, lower), TLanes.LessThanOrEqual(magnitude, upper), TLanes.Zero);
                bits?.Write(start + j, TLanes.MaskBits(keep), TLanes.Count);
                TLanes.AddByPosition(magnitude, ref total0, ref total1);
                TLanes.AddByPosition(magnitude * TLanes.Select(keep, one, TLanes.Zero), ref kept0, ref kept1);
            }
            total0.CopyTo(total, 0);
            total1.CopyTo(total, 4);
            kept0.CopyTo(kept, 0);
            kept1.CopyTo(kept, 4);
            return j;
        }

        private void AddNormsOne(int i, ushort* model, ushort* basePtr, long j, long start)
        {
            var index = start + j;
            var lane = (int)(index & 7);
            var magnitude = Math.Abs(BFloat16Bits.ToSingle(Delta(model[j], basePtr[j])));
            var keep = _random[i]
                ? CounterRandom.Uniform24(_randomKey[i], index) < _randomThreshold[i]
                : magnitude >= _lower[i] && magnitude <= _upper[i];
            _keep[i]?.Write(index, keep ? 1u : 0u, 1);
            _l1Total[i][lane] += magnitude;
            _l1Kept[i][lane] += magnitude * (keep ? 1f : 0f);
        }

        /// <summary>The norm pass has ended: each rescaled model's factor in bfloat16 (none where a norm is below epsilon).</summary>
        private void ReadFactors()
        {
            for (var i = 0; i < _count; i++)
            {
                if (!_rescaled[i] || _drop[i])
                {
                    continue;
                }
                using var factor = TaskArithmeticSettings.L1RescaleFactorInDType(
                    PositionLanes.Sum(_l1Total[i]), PositionLanes.Sum(_l1Kept[i]), ScalarType.BFloat16);
                if (factor is null)
                {
                    _rescaled[i] = false;
                    continue;
                }
                using var wide = factor.to(ScalarType.Float32);
                _factor[i] = wide.item<float>();
            }
        }

        private void ReturnHistograms()
        {
            for (var i = 0; i < _count; i++)
            {
                if (_histograms[i] is { } histogram)
                {
                    MagnitudeSelect.ReturnHistogram(histogram);
                    _histograms[i] = null;
                }
            }
        }

        private void Check(MergeTensorRequest block)
        {
            RequestChecks.Check(block, _variant.Name, _variant.Traits);
            if (block.Models.Count != _count)
            {
                throw new ArgumentException($"{_variant.Name}: tensor '{_tensorName}' started with {_count} models, a block has {block.Models.Count}", nameof(block));
            }
        }
    }

    /// <summary>A block's bfloat16 bit patterns: the tensors themselves when plain, else exact bfloat16 copies on the CPU (the output copied back).</summary>
    private static BlockPointers Bits(MergeTensorRequest request, bool withOutput) =>
        BlockPointers.Of(request, IsPlainBFloat16, ScalarType.BFloat16, withOutput);
}
