using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Computes <c>sparsify(x_i - base)</c> into a caller-owned buffer, deterministically: calling it twice for the same
/// model yields the same tensor (magnitude thresholds are remembered, random masks come from the same seed).
/// </summary>
internal sealed class DeltaSparsifier
{
    private readonly TaskArithmeticVariant _variant;
    private readonly TaskArithmeticSettings _settings;
    private readonly long _seed;
    private readonly long _elementStart;
    private readonly ITensorScratch _scratch;
    private Tensor? _counter;
    private Tensor? _counterTemp;
    private readonly double[] _lower;
    private readonly double[] _upper;
    private readonly bool[] _known;

    /// <param name="seed">The tensor's seed: DARE's stream of model i is keyed by <c>seed + i</c>.</param>
    /// <param name="elementStart">Position of the first element in the whole tensor (DARE's counter).</param>
    /// <param name="scratch">Where the int64 counter buffers of DARE are rented.</param>
    public DeltaSparsifier(TaskArithmeticVariant variant, TaskArithmeticSettings settings, long seed, long elementStart, ITensorScratch scratch, int count)
    {
        _variant = variant;
        _settings = settings;
        _seed = seed;
        _elementStart = elementStart;
        _scratch = scratch;
        _lower = new double[count];
        _upper = new double[count];
        _known = new bool[count];
    }

    /// <summary>Writes the sparsified delta of model <paramref name="model"/> into <paramref name="delta"/>; <paramref name="mask"/> is scratch.</summary>
    public void Delta(int model, Tensor input, Tensor baseTensor, Tensor delta, Tensor? mask)
    {
        delta.copy_(input).sub_(baseTensor);
        var density = _settings.Densities[model];
        if (_variant.Sparsification == SparsificationMethod.None || density >= 1.0)
        {
            return;
        }
        // In a half-precision compute dtype the norms and their ratio are 0-dim tensors of that dtype, as mergekit's are
        // (except DARE in float16, which mergekit rescales in float32 because CPU bernoulli lacks float16).
        var half = HalfPrecisionTaskArithmetic.IsHalf(delta.dtype)
            && !(_variant.Sparsification == SparsificationMethod.Random && delta.dtype == ScalarType.Float16);
        var total = _settings.RescalesL1(model) ? L1(delta) : 0;
        switch (_variant.Sparsification)
        {
            case SparsificationMethod.Magnitude:
            case SparsificationMethod.MagnitudeOutliers:
                KeepBand(model, delta, mask!);
                break;
            case SparsificationMethod.Random:
                DropRandom(model, delta, mask!, density);
                break;
            case SparsificationMethod.RankedMagnitudeSampling:
                DropByRowRank(model, delta, density);
                break;
            case SparsificationMethod.None:
            default:
                break;
        }
        if (_settings.RescalesL1(model) && half)
        {
            RescaleInDType(delta, total);
        }
        else if (_settings.RescalesL1(model))
        {
            var factor = TaskArithmeticSettings.L1RescaleFactor(total, L1(delta));
            if (factor != 1f)
            {
                delta.mul_(factor);
            }
        }
    }

    /// <summary>mergekit's L1 rescale in the delta's own dtype: <c>delta * (before / after)</c> unless either norm is below epsilon.</summary>
    private static void RescaleInDType(Tensor delta, double before)
    {
        using var factor = TaskArithmeticSettings.L1RescaleFactorInDType(before, L1(delta), delta.dtype);
        if (factor is not null)
        {
            delta.mul_(factor);
        }
    }

    /// <summary>sum |delta| accumulated in float64 (the delta's own values: as stored in a half-precision dtype).</summary>
    private static double L1(Tensor delta)
    {
        using var scope = NewDisposeScope();
        return delta.abs().sum(ScalarType.Float64).item<double>();
    }

    /// <summary>
    /// DARE: keep each entry with probability density, by the counter stream <see cref="CounterRandom"/> keyed by
    /// <c>seed + model</c> and the element's position in the whole tensor: the same drops as the fused CPU kernel, on
    /// any device and whatever the block size.
    /// </summary>
    private void DropRandom(int model, Tensor delta, Tensor mask, double density)
    {
        if (density <= 0)
        {
            delta.zero_();
            return;
        }
        var key = CounterRandom.StreamKey(_seed + model);
        var threshold = CounterRandom.Threshold(density);
        if (!TryFillKeepMask(mask, _elementStart, key, threshold))
        {
            _counter ??= _scratch.Rent(ScalarType.Int64);
            _counterTemp ??= _scratch.Rent(ScalarType.Int64);
            CounterRandom.KeepMask(mask, _elementStart, key, threshold, _counter, _counterTemp);
        }
        delta.mul_(mask);
    }

    /// <summary>
    /// <see cref="CounterRandom.KeepMask"/>'s 0/1 mask written in managed code into a contiguous CPU float32, bfloat16 or
    /// float16 tensor, in parallel chunks (the same decisions, without two int64 buffers of the tensor's size); false for
    /// other tensors.
    /// </summary>
    private static unsafe bool TryFillKeepMask(Tensor mask, long elementStart, ulong key, uint threshold)
    {
        if (mask.device_type != DeviceType.CPU || !mask.is_contiguous() || mask.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            return false;
        }
        var n = mask.numel();
        if (n == 0)
        {
            return true;
        }
        var pointer = (nint)NativeSpans.Address(mask);
        var wide = mask.dtype == ScalarType.Float32;
        ushort one = mask.dtype == ScalarType.BFloat16 ? (ushort)0x3F80 : (ushort)0x3C00;
        const long Chunk = 1L << 18;
        Parallel.For(0L, (n + Chunk - 1) / Chunk, c =>
        {
            var end = Math.Min(n, (c + 1) * Chunk);
            for (var e = c * Chunk; e < end; e++)
            {
                var keep = CounterRandom.Uniform24(key, elementStart + e) < threshold;
                if (wide)
                {
                    ((float*)pointer)[e] = keep ? 1f : 0f;
                }
                else
                {
                    ((ushort*)pointer)[e] = keep ? one : (ushort)0;
                }
            }
        });
        return true;
    }

    /// <summary>
    /// DELLA's MagPrune (mergekit's della_magprune): within each row (dimension 1; a 1-D tensor is one row) the entry of
    /// 0-based magnitude rank r of n is kept with probability density - epsilon + 2 epsilon r / (n - 1), by the counter
    /// stream keyed by <c>seed + model</c> and the element's position. Equal magnitudes rank by position (stable; mergekit's
    /// argsort orders them arbitrarily); a row of one element is kept with probability density (mergekit fails there).
    /// Whole tensors on the CPU in float32 (DELLA does not stream), rows in parallel.
    /// </summary>
    private void DropByRowRank(int model, Tensor delta, double density)
    {
        if (density <= 0)
        {
            delta.zero_();
            return;
        }
        var epsilon = _settings.Epsilons[model];
        var shape = delta.shape;
        long outer = shape.Length < 2 ? 1 : shape[0];
        long rowLength = shape.Length < 2 ? delta.numel() : shape[1];
        long inner = rowLength == 0 || outer == 0 ? 1 : delta.numel() / (outer * rowLength);
        float[] values;
        using (var cpu = delta.to(ScalarType.Float32, CPU).contiguous())
        {
            values = cpu.data<float>().ToArray();
        }
        if (rowLength > uint.MaxValue)
        {
            throw new ArgumentException($"DELLA ranks rows of at most {uint.MaxValue} entries; '{delta.name}' has rows of {rowLength}");
        }
        var key = CounterRandom.StreamKey(_seed + model);
        // Rows are independent: in parallel, each with its own sort keys. A key is the magnitude's bit pattern (which
        // orders like the magnitude for non-negative floats; + 1, so that NaN, 0, ranks below every number) above the
        // position, so one primitive sort orders by magnitude and equal magnitudes by position.
        Parallel.For(0L, outer * inner, () => new ulong[rowLength], (row, _, keys) =>
        {
            var (o, c) = (row / inner, row % inner);
            for (long k = 0; k < rowLength; k++)
            {
                var magnitude = MathF.Abs(values[(((o * rowLength) + k) * inner) + c]);
                var bits = float.IsNaN(magnitude) ? 0UL : BitConverter.SingleToUInt32Bits(magnitude) + 1UL;
                keys[k] = (bits << 32) | (ulong)k;
            }
            Array.Sort(keys);
            for (long r = 0; r < rowLength; r++)
            {
                var index = (((o * rowLength) + (long)(keys[r] & 0xFFFF_FFFFUL)) * inner) + c;
                var probability = rowLength > 1 ? density - epsilon + (2 * epsilon * r / (rowLength - 1)) : density;
                if (CounterRandom.Uniform24(key, _elementStart + index) >= CounterRandom.Threshold(probability))
                {
                    values[index] = 0f;
                }
            }
            return keys;
        }, _ => { });
        using var kept = torch.tensor(values, shape).to(delta.dtype, delta.device);
        delta.copy_(kept);
    }

    /// <summary>
    /// Keeps the magnitude band <see cref="TaskArithmeticSettings.MagnitudeRanks"/> names (TIES: the largest entries;
    /// Breadcrumbs: between the dropped bottom and top), boundary ties kept.
    /// </summary>
    private void KeepBand(int model, Tensor delta, Tensor mask)
    {
        var numel = delta.numel();
        var (lowerRank, upperRank, drop) = _settings.MagnitudeRanks(_variant, model, numel);
        if (drop)
        {
            delta.zero_();
            return;
        }
        if (!_known[model])
        {
            _lower[model] = lowerRank > 0 ? MagnitudeSelect.KthSmallestMagnitude(delta, lowerRank, mask) : double.NegativeInfinity;
            _upper[model] = upperRank > 0 ? MagnitudeSelect.KthSmallestMagnitude(delta, upperRank, mask) : double.PositiveInfinity;
            _known[model] = true;
        }
        if (lowerRank > 0)
        {
            mask.copy_(delta).abs_().ge_(_lower[model]);
            delta.mul_(mask);
        }
        if (upperRank > 0)
        {
            mask.copy_(delta).abs_().le_(_upper[model]);
            delta.mul_(mask);
        }
    }
}
