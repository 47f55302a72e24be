using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Generalized task arithmetic over one tensor seen in blocks (<see cref="ITensorMergeSession"/>): statistics passes
/// gather each model's magnitude thresholds with <see cref="MagnitudeRanks"/> (two passes when a variant trims by
/// magnitude, none otherwise), then <see cref="TaskArithmeticKernel"/> merges block by block. The whole-tensor CPU path
/// of <see cref="TaskArithmeticCore"/> runs the same session over a single block, so both give identical results.
/// Blocks whose tensors are all contiguous CPU float32, or all contiguous CPU bfloat16, are read and written in place
/// (bfloat16 widened in registers and the result rounded once, <see cref="BFloat16Elements"/>); any other block is
/// copied into CPU float32 temporaries first (correct, not fast).
/// </summary>
internal sealed unsafe class TaskArithmeticSession : ITensorMergeSession
{
    private readonly TaskArithmeticVariant _variant;
    private readonly TaskArithmeticKernel _kernel;
    private readonly MagnitudeRanks?[] _ranks;
    private readonly (int Lower, int Upper)[] _rankSlots;
    private readonly string _tensorName;
    private readonly bool[] _rescaled;
    private readonly double[][] _l1Total;
    private readonly double[][] _l1Kept;
    private readonly long _elements;
    private bool _thresholdsSet;
    private bool _normPass;
    private bool _statisticsDone;

    public TaskArithmeticSession(TaskArithmeticVariant variant, TaskArithmeticSettings settings, long numel, long seed, string tensorName)
    {
        _variant = variant;
        _tensorName = tensorName;
        _elements = numel;
        var count = settings.Weights.Length;
        _kernel = new TaskArithmeticKernel(count)
        {
            Random = variant.Sparsification == SparsificationMethod.Random,
            Consensus = variant.Consensus == ConsensusMethod.Sum,
            Normalize = settings.Normalize,
            Lambda = (float)settings.Lambda,
        };
        _ranks = new MagnitudeRanks?[count];
        _rankSlots = new (int, int)[count];
        _rescaled = new bool[count];
        _l1Total = [.. Enumerable.Range(0, count).Select(_ => new double[PositionLanes.Count])];
        _l1Kept = [.. Enumerable.Range(0, count).Select(_ => new double[PositionLanes.Count])];
        double weightSum = 0;
        for (var i = 0; i < count; i++)
        {
            _kernel.Weights[i] = (float)settings.Weights[i];
            weightSum += settings.Weights[i];
            _rankSlots[i] = (-1, -1);
            var density = settings.Densities[i];
            if (variant.Sparsification == SparsificationMethod.Random)
            {
                if (density <= 0)
                {
                    _kernel.Scale[i] = 0f;
                }
                else if (density < 1.0)
                {
                    _kernel.RandomKey[i] = CounterRandom.StreamKey(seed + i);
                    _kernel.RandomThreshold[i] = CounterRandom.Threshold(density);
                    _rescaled[i] = settings.RescalesL1(i);
                }
                continue;
            }
            var (lower, upper, drop) = settings.MagnitudeRanks(variant, i, numel);
            if (drop)
            {
                _kernel.Scale[i] = 0f;
                continue;
            }
            _rescaled[i] = settings.RescalesL1(i);
            var wanted = new List<long>(2);
            if (lower > 0)
            {
                _rankSlots[i].Lower = wanted.Count;
                wanted.Add(lower);
            }
            if (upper > 0)
            {
                _rankSlots[i].Upper = wanted.Count;
                wanted.Add(upper);
            }
            if (wanted.Count > 0)
            {
                _ranks[i] = new MagnitudeRanks(numel, [.. wanted]);
            }
        }
        _kernel.OutputScale = !_kernel.Consensus && settings.Normalize && Math.Abs(weightSum) >= TaskArithmeticSettings.ZeroDivisor
            ? (float)(settings.Lambda / weightSum)
            : (float)settings.Lambda;
    }

    /// <summary>
    /// Starts a session for a streamed tensor (parameters checked here, before any block is read). In a half-precision
    /// compute dtype (<see cref="MergeTensorInfo.ComputeDType"/>) the session rounds as mergekit does: bfloat16 through
    /// <see cref="BFloat16TaskArithmetic.Session"/> where its passes apply (all but DELLA), otherwise (DELLA's row ranks;
    /// float16) the blocks are gathered and merged whole by <see cref="HalfPrecisionTaskArithmetic"/>
    /// (<see cref="GatheredSession"/>: the same bits, the whole tensor's memory).
    /// </summary>
    public static ITensorMergeSession Begin(TaskArithmeticVariant variant, MergeTensorInfo tensor, ILogger logger)
    {
        RequestChecks.Check(tensor, variant.Name, variant.Traits);
        var settings = TaskArithmeticSettings.Read(variant, tensor.Parameters, tensor.Weights, tensor.ModelNames, tensor.TensorName);
        TaskArithmeticLog.SmallTensorDrops(logger, variant, settings, tensor.ElementCount, tensor.TensorName, tensor.ModelNames);
        if (HalfPrecisionTaskArithmetic.IsHalf(tensor.ComputeDType))
        {
            if (tensor.ComputeDType == ScalarType.BFloat16 && BFloat16TaskArithmetic.Fits(variant, settings))
            {
                return new BFloat16TaskArithmetic.Session(variant, settings, tensor.ElementCount, tensor.TensorName, tensor.Seed);
            }
            return new GatheredSession(tensor, whole => HalfPrecisionTaskArithmetic.Merge(
                whole, variant, settings, whole.Base!, whole.TensorSeed != 0 ? whole.TensorSeed : whole.Seed));
        }
        return new TaskArithmeticSession(variant, settings, tensor.ElementCount, tensor.Seed, tensor.TensorName);
    }

    /// <summary>
    /// True when the request's tensors (base, models, output) are all contiguous CPU float32 or all contiguous CPU
    /// bfloat16, with the output's element count: the kernels read and write them in place.
    /// </summary>
    public static bool IsDirect(MergeTensorRequest request) => Format(request) != StorageFormat.None;

    private static StorageFormat Format(MergeTensorRequest request) =>
        StorageFormats.Common(request.Output.numel(), request.Output, request.Base is null ? request.Models : request.Models.Prepend(request.Base));

    /// <summary>
    /// Statistics passes: the magnitude-rank passes until every model's band is known, then (when <c>rescale</c> is
    /// on and something is sparsified) one pass for the L1 norms of each model's delta and of its kept part.
    /// </summary>
    public bool BeginPass(int pass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pass);
        if (_normPass)
        {
            // The norm pass has ended: every kept delta is scaled back to its tensor's L1 norm.
            for (var i = 0; i < _rescaled.Length; i++)
            {
                if (_rescaled[i])
                {
                    _kernel.Scale[i] = TaskArithmeticSettings.L1RescaleFactor(PositionLanes.Sum(_l1Total[i]), PositionLanes.Sum(_l1Kept[i]));
                }
            }
            _normPass = false;
            _statisticsDone = true;
            return false;
        }
        if (pass > 0)
        {
            foreach (var r in _ranks)
            {
                r?.EndPass();
            }
        }
        if (_ranks.Any(r => r is not null && !r.IsComplete))
        {
            return true;
        }
        if (!_thresholdsSet)
        {
            for (var i = 0; i < _ranks.Length; i++)
            {
                if (_ranks[i] is { } r)
                {
                    var (lower, upper) = _rankSlots[i];
                    _kernel.Lower[i] = lower >= 0 ? r.Value(lower) : float.NegativeInfinity;
                    _kernel.Upper[i] = upper >= 0 ? r.Value(upper) : float.PositiveInfinity;
                }
            }
            _thresholdsSet = true;
        }
        if (_rescaled.Any(r => r))
        {
            // The norm pass draws DARE's keep mask of each rescaled model: kept as bits for the merge.
            for (var i = 0; i < _rescaled.Length; i++)
            {
                if (_kernel.Random && _rescaled[i])
                {
                    _kernel.Keep[i] = KeepBits.ForTensor(_elements);
                }
            }
            _normPass = true;
            return true;
        }
        _statisticsDone = true;
        return false;
    }

    public void Observe(MergeTensorRequest block)
    {
        Check(block);
        if (_normPass)
        {
            ObserveNorms(block);
            return;
        }
        if (_ranks.All(r => r is null))
        {
            return;
        }
        var format = Format(block);
        using var direct = Pointers(block, format, withOutput: false);
        for (var i = 0; i < _ranks.Length; i++)
        {
            if (_ranks[i] is not { } ranks)
            {
                continue;
            }
            if (format == StorageFormat.BFloat16)
            {
                ranks.Add<BFloat16Elements>((void*)direct.Models[i], direct.Base, direct.Count);
            }
            else
            {
                ranks.Add<Float32Elements>((void*)direct.Models[i], direct.Base, direct.Count);
            }
        }
    }

    private void ObserveNorms(MergeTensorRequest block)
    {
        var format = Format(block);
        using var direct = Pointers(block, format, withOutput: false);
        for (var i = 0; i < _rescaled.Length; i++)
        {
            if (!_rescaled[i])
            {
                continue;
            }
            if (format == StorageFormat.BFloat16)
            {
                _kernel.AddL1<BFloat16Elements>(i, direct.Base, (void*)direct.Models[i], direct.Count, block.ElementStart, _l1Total[i], _l1Kept[i]);
            }
            else
            {
                _kernel.AddL1<Float32Elements>(i, direct.Base, (void*)direct.Models[i], direct.Count, block.ElementStart, _l1Total[i], _l1Kept[i]);
            }
        }
    }

    /// <summary>Merges one block; the random stream (DARE) is indexed by the element's position in the whole tensor.</summary>
    public void Merge(MergeTensorRequest block)
    {
        Check(block);
        if (!_statisticsDone)
        {
            throw new InvalidOperationException($"{_variant.Name}: tensor '{_tensorName}' merged before its statistics passes ended (call BeginPass until it returns false)");
        }
        var format = Format(block);
        using var direct = Pointers(block, format, withOutput: true);
        if (format == StorageFormat.BFloat16)
        {
            _kernel.Run<BFloat16Elements>(direct.Base, direct.Models, direct.Output, direct.Count, block.ElementStart);
        }
        else
        {
            _kernel.Run<Float32Elements>(direct.Base, direct.Models, direct.Output, direct.Count, block.ElementStart);
        }
        direct.CopyOutputBack(block.Output);
    }

    public void Dispose()
    {
        // Histograms are managed and dropped with the session; the kept draws go back to their pool.
        foreach (var keep in _kernel.Keep)
        {
            keep?.Dispose();
        }
    }

    private void Check(MergeTensorRequest block)
    {
        RequestChecks.Check(block, _variant.Name, _variant.Traits);
        if (block.Models.Count != _kernel.Count)
        {
            throw new ArgumentException($"{_variant.Name}: tensor '{_tensorName}' started with {_kernel.Count} models, a block has {block.Models.Count}", nameof(block));
        }
    }

    /// <summary>
    /// Pointers to a block's memory: the tensors themselves when they share a storage format (<paramref name="format"/>
    /// not <see cref="StorageFormat.None"/>), else CPU float32 copies (output copied back).
    /// </summary>
    private static BlockPointers Pointers(MergeTensorRequest block, StorageFormat format, bool withOutput) =>
        BlockPointers.Of(block, _ => format != StorageFormat.None, ScalarType.Float32, withOutput);
}
