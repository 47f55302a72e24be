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
/// <para>Covers task_arithmetic, ties, breadcrumbs and breadcrumbs_ties (no sparsification, or magnitude bands) with no
/// L1 rescale, whole (contiguous bfloat16 inputs and output) or streamed in blocks (<see cref="Session"/>); DARE, DELLA,
/// the L1 rescale (torch's own blocked sum) and float16 stay on the libtorch path.</para>
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
    /// Whether the fused passes cover the method and its settings: no sparsification or magnitude bands, and no L1
    /// rescale (its norms are torch's own blocked sums).
    /// </summary>
    public static bool Fits(TaskArithmeticVariant variant, TaskArithmeticSettings settings)
    {
        if (variant.Sparsification is not (SparsificationMethod.None or SparsificationMethod.Magnitude or SparsificationMethod.MagnitudeOutliers))
        {
            return false;
        }
        return variant.Sparsification == SparsificationMethod.None || !Enumerable.Range(0, settings.Weights.Length).Any(settings.RescalesL1);
    }

    private static bool IsPlainBFloat16(Tensor tensor) =>
        tensor.dtype == ScalarType.BFloat16 && tensor.device_type == DeviceType.CPU && tensor.is_contiguous() && tensor.numel() > 0;

    /// <summary>
    /// Merges the request's tensor into its output (call only when <see cref="Applies"/>): <see cref="Session"/> over the
    /// tensor as one block. The task vectors are never stored: a model's magnitude bounds come from a histogram of its
    /// rounded deltas' magnitudes (a bfloat16 magnitude is its 15 low bits, whose integer order is the magnitudes' order,
    /// so 32768 buckets give the k-th exactly, ties kept as the libtorch path keeps them), and the combination pass
    /// computes each delta again from the inputs.
    /// </summary>
    public static void Merge(MergeTensorRequest request, TaskArithmeticVariant variant, TaskArithmeticSettings settings)
    {
        using var session = new Session(variant, settings, request.Output.numel(), request.TensorName);
        WholeTensor.Run(session, request);
    }

    /// <summary>Counts into <paramref name="histogram"/> (zeroed, 32768 buckets) how many elements have each 15-bit magnitude key of bf16(x - base).</summary>
    private static unsafe void MagnitudeHistogram(ushort* x, ushort* b, long n, long[] histogram)
    {
        long j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Span<ushort> keys = stackalloc ushort[8];
            for (; j + 8 <= n; j += 8)
            {
                var delta = BFloat16Bits.Narrow(BFloat16Bits.Widen(Vector128.Load(x + j)) - BFloat16Bits.Widen(Vector128.Load(b + j)));
                (delta & Vector128.Create((ushort)0x7FFF)).CopyTo(keys);
                foreach (var key in keys)
                {
                    histogram[key]++;
                }
            }
        }
        for (; j < n; j++)
        {
            histogram[Delta(x[j], b[j]) & 0x7FFF]++;
        }
    }

    /// <summary>The <paramref name="k"/>-th smallest magnitude (1-based) of a <see cref="MagnitudeHistogram"/>.</summary>
    private static float KthSmallest(long[] histogram, long k)
    {
        for (var key = 0; key < MagnitudeSelect.HalfKeys; key++)
        {
            if (k <= histogram[key])
            {
                return BFloat16Bits.ToSingle((ushort)key);
            }
            k -= histogram[key];
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
    private sealed record Plan(int Count, float[] Weights, float[] Lower, float[] Upper, bool[] Drop, bool Consensus, bool Normalize, float? Lambda, float PlainDivisor);

    /// <summary>Per element: each model's band mask and weight, then the sum or sign election, divisor, lambda and base.</summary>
    private static unsafe void Combine(Plan plan, IntPtr[] inputs, long n, ushort* basePtr, ushort* output)
    {
        long j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            j = CombineVectors(plan, inputs, n, basePtr, output);
        }
        Span<float> terms = stackalloc float[plan.Count];
        for (; j < n; j++)
        {
            for (var i = 0; i < plan.Count; i++)
            {
                terms[i] = Weighted(plan, i, BFloat16Bits.ToSingle(Delta(((ushort*)inputs[i])[j], basePtr[j])));
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
    /// <see cref="Combine"/> eight elements at a time, lane by lane the same float32 operations in the same order (so
    /// the same bits); returns how many elements it did (a multiple of eight).
    /// </summary>
    private static unsafe long CombineVectors(Plan plan, IntPtr[] inputs, long n, ushort* basePtr, ushort* output)
    {
        var count = plan.Count;
        Span<Vector256<float>> terms = stackalloc Vector256<float>[count];
        var one = Vector256.Create(1f);
        var minusOne = Vector256.Create(-1f);
        var lambda = Vector256.Create(plan.Lambda ?? 1f);
        var plainDivisor = Vector256.Create(plan.PlainDivisor);
        long j = 0;
        for (; j + 8 <= n; j += 8)
        {
            var baseValues = BFloat16Bits.Widen(Vector128.Load(basePtr + j));
            for (var i = 0; i < count; i++)
            {
                var delta = RoundVector(BFloat16Bits.Widen(Vector128.Load((ushort*)inputs[i] + j)) - baseValues);
                if (plan.Drop[i])
                {
                    delta = Vector256<float>.Zero;
                }
                else
                {
                    if (!float.IsNegativeInfinity(plan.Lower[i]))
                    {
                        delta *= Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(delta), Vector256.Create(plan.Lower[i])), one, Vector256<float>.Zero);
                    }
                    if (!float.IsPositiveInfinity(plan.Upper[i]))
                    {
                        delta *= Vector256.ConditionalSelect(Vector256.LessThanOrEqual(Vector256.Abs(delta), Vector256.Create(plan.Upper[i])), one, Vector256<float>.Zero);
                    }
                }
                terms[i] = RoundVector(delta * Vector256.Create(plan.Weights[i]));
            }
            Vector256<float> mixed;
            Vector256<float> divisor;
            var sum = Vector256<float>.Zero;
            for (var i = 0; i < count; i++)
            {
                sum += terms[i];
            }
            if (plan.Consensus)
            {
                var majority = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(RoundVector(sum), Vector256<float>.Zero), one, minusOne);
                var kept = Vector256<float>.Zero;
                var weight = Vector256<float>.Zero;
                for (var i = 0; i < count; i++)
                {
                    var sign = Vector256.ConditionalSelect(Vector256.GreaterThan(terms[i], Vector256<float>.Zero), one,
                        Vector256.ConditionalSelect(Vector256.LessThan(terms[i], Vector256<float>.Zero), minusOne, Vector256<float>.Zero));
                    var agree = Vector256.ConditionalSelect(Vector256.Equals(sign, majority), one, Vector256<float>.Zero);
                    kept += terms[i] * agree;
                    weight += Vector256.Create(plan.Weights[i]) * agree;
                }
                mixed = RoundVector(kept);
                divisor = RoundVector(weight);
                divisor = Vector256.ConditionalSelect(Vector256.Equals(divisor, Vector256<float>.Zero), one, divisor);
            }
            else
            {
                mixed = RoundVector(sum);
                divisor = plainDivisor;
            }
            if (plan.Normalize)
            {
                mixed = RoundVector(mixed / divisor);
            }
            if (plan.Lambda is not null)
            {
                mixed = RoundVector(mixed * lambda);
            }
            BFloat16Bits.Narrow(baseValues + mixed).Store(output + j);
        }
        return j;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> RoundVector(Vector256<float> values) => BFloat16Bits.Widen(BFloat16Bits.Narrow(values));

    /// <summary>Model <paramref name="i"/>'s delta through its magnitude band (each mask a multiplication by 1 or 0, as torch's) and times its weight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Weighted(Plan plan, int i, float delta)
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
        }
        return Round(delta * plan.Weights[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sign(float value) => value > 0f ? 1f : value < 0f ? -1f : 0f;

    /// <summary>float32 rounded to bfloat16 and widened back (the value a bfloat16 tensor holds).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Round(float value) => BFloat16Bits.ToSingle(BFloat16Bits.FromSingle(value));

    /// <summary>
    /// The fused passes over one tensor seen in blocks (<see cref="ITensorMergeSession"/>): one statistics pass adds each
    /// block's rounded delta magnitudes to every trimming model's histogram (the thresholds are then exact for the whole
    /// tensor), and the combination pass is elementwise, so the bits do not depend on the block size; the whole-tensor
    /// <see cref="Merge"/> runs this session over a single block. Blocks whose tensors are all contiguous CPU bfloat16 are
    /// read and written in place; others (float32 holding the host's bfloat16-rounded values, or on another device) are
    /// copied to bfloat16 first, exactly, and the result copied back (correct, not fast).
    /// </summary>
    internal sealed unsafe class Session : ITensorMergeSession
    {
        private readonly TaskArithmeticVariant _variant;
        private readonly TaskArithmeticSettings _settings;
        private readonly string _tensorName;
        private readonly long _numel;
        private readonly int _count;
        private readonly float[] _weights;
        private readonly float[] _lower;
        private readonly float[] _upper;
        private readonly bool[] _drop;
        private readonly (long Lower, long Upper)[] _ranks;
        private readonly long[]?[] _histograms;
        private Plan? _plan;

        public Session(TaskArithmeticVariant variant, TaskArithmeticSettings settings, long numel, string tensorName)
        {
            if (!Fits(variant, settings))
            {
                throw new ArgumentException($"{variant.Name}: tensor '{tensorName}' needs the libtorch half-precision path (DARE, DELLA or the L1 rescale)", nameof(variant));
            }
            _variant = variant;
            _settings = settings;
            _tensorName = tensorName;
            _numel = numel;
            _count = settings.Weights.Length;
            _weights = RoundedWeights(settings.Weights);
            _lower = new float[_count];
            _upper = new float[_count];
            _drop = new bool[_count];
            _ranks = new (long, long)[_count];
            _histograms = new long[]?[_count];
            for (var i = 0; i < _count; i++)
            {
                (_lower[i], _upper[i]) = (float.NegativeInfinity, float.PositiveInfinity);
                if (variant.Sparsification == SparsificationMethod.None)
                {
                    continue;
                }
                var (lowerRank, upperRank, dropAll) = settings.MagnitudeRanks(variant, i, numel);
                _drop[i] = dropAll;
                _ranks[i] = dropAll ? (0, 0) : (lowerRank, upperRank);
            }
        }

        /// <summary>Pass 0 fills the histograms of the models that trim by magnitude (none: no statistics pass); then the thresholds are read off them.</summary>
        public bool BeginPass(int pass)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(pass);
            if (pass == 0 && _plan is null)
            {
                for (var i = 0; i < _count; i++)
                {
                    if (_ranks[i].Lower > 0 || _ranks[i].Upper > 0)
                    {
                        _histograms[i] = MagnitudeSelect.RentHistogram();
                    }
                }
                if (_histograms.Any(h => h is not null))
                {
                    return true;
                }
            }
            if (_plan is null)
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
                _plan = new Plan(_count, _weights, _lower, _upper, _drop, _variant.Consensus == ConsensusMethod.Sum, _settings.Normalize,
                    _settings.Lambda == 1.0 ? null : (float)_settings.Lambda, PlainDivisor(_weights));
            }
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            Check(block);
            if (_plan is not null)
            {
                throw new InvalidOperationException($"{_variant.Name}: tensor '{_tensorName}' observed after its statistics passes ended");
            }
            using var bits = Bits.Of(block, withOutput: false);
            for (var i = 0; i < _count; i++)
            {
                if (_histograms[i] is { } histogram)
                {
                    MagnitudeHistogram((ushort*)bits.Models[i], bits.Base, bits.Count, histogram);
                }
            }
        }

        public void Merge(MergeTensorRequest block)
        {
            Check(block);
            var plan = _plan ?? throw new InvalidOperationException(
                $"{_variant.Name}: tensor '{_tensorName}' merged before its statistics passes ended (call BeginPass until it returns false)");
            using var bits = Bits.Of(block, withOutput: true);
            Combine(plan, bits.Models, bits.Count, bits.Base, bits.Output);
            bits.CopyOutputBack(block.Output);
        }

        public void Dispose() => ReturnHistograms();

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
            if (block.ElementStart < 0 || block.ElementStart + block.Output.numel() > _numel)
            {
                throw new ArgumentException($"{_variant.Name}: a block of tensor '{_tensorName}' ({block.Output.numel()} elements from {block.ElementStart}) lies outside its {_numel} elements", nameof(block));
            }
        }
    }

    /// <summary>A block's bfloat16 bit patterns: the tensors themselves when plain, else exact bfloat16 copies on the CPU (the output copied back).</summary>
    private sealed unsafe class Bits : IDisposable
    {
        private readonly List<Tensor> _owned = [];
        private Tensor? _outputCopy;

        public ushort* Base { get; private set; }

        public IntPtr[] Models { get; private set; } = [];

        public ushort* Output { get; private set; }

        public long Count { get; private set; }

        public static Bits Of(MergeTensorRequest request, bool withOutput)
        {
            var bits = new Bits { Count = request.Output.numel() };
            bits.Models = new IntPtr[request.Models.Count];
            if (bits.Count == 0)
            {
                return bits;
            }
            bits.Base = bits.Pointer(request.Base!);
            for (var i = 0; i < bits.Models.Length; i++)
            {
                bits.Models[i] = (IntPtr)bits.Pointer(request.Models[i]);
            }
            if (withOutput)
            {
                if (IsPlainBFloat16(request.Output))
                {
                    bits.Output = (ushort*)NativeSpans.Address(request.Output);
                }
                else
                {
                    bits._outputCopy = torch.empty(bits.Count, ScalarType.BFloat16);
                    bits.Output = (ushort*)NativeSpans.Address(bits._outputCopy);
                }
            }
            return bits;
        }

        public void CopyOutputBack(Tensor output)
        {
            if (_outputCopy is not null)
            {
                using var shaped = _outputCopy.view(output.shape);
                output.copy_(shaped);
            }
        }

        public void Dispose()
        {
            foreach (var t in _owned)
            {
                t.Dispose();
            }
            _outputCopy?.Dispose();
        }

        private ushort* Pointer(Tensor tensor)
        {
            if (IsPlainBFloat16(tensor))
            {
                return (ushort*)NativeSpans.Address(tensor);
            }
            // Exact: the host hands a bfloat16 compute dtype's inputs already rounded to it.
            var copy = tensor.to(ScalarType.BFloat16, torch.CPU).contiguous();
            _owned.Add(copy);
            return (ushort*)NativeSpans.Address(copy);
        }
    }
}
