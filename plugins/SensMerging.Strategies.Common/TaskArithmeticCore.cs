using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Generalized task arithmetic, in place:
/// <c>out = base + lambda * mix_i(w_i * sparsify(x_i - base))</c>, where mix is a plain sum (optionally divided by the
/// sum of weights) or a TIES sign election (keep contributions whose sign matches the sign of the sum of weighted
/// deltas; optionally divide each entry by the summed weights of the kept contributions).
/// </summary>
/// <remarks>
/// Two implementations with the same math: contiguous CPU float32 tensors (the common case), or contiguous CPU bfloat16
/// ones (widened in registers, the result rounded once, as <see cref="StrategyTraits.AcceptsBFloat16"/> promises), go through
/// <see cref="TaskArithmeticSession"/> over one block (radix-select thresholds, then one fused SIMD pass,
/// <see cref="TaskArithmeticKernel"/>, with a counter-based random stream for DARE, <see cref="CounterRandom"/>, keyed
/// by <c>TensorSeed + modelIndex</c> (or <c>Seed</c> from hosts that set no tensor seed) and the element's position in the
/// whole tensor, so the drops do not depend on how the host splits a tensor into blocks);
/// anything else (GPU, other dtypes, strided views) runs the in-place libtorch path below, whose DARE masks come from
/// the same counter stream computed with int64 tensor ops on the tensor's device (<see cref="CounterRandom.KeepMask"/>):
/// both paths drop the same entries; their sums may differ in the last bit (different operation order).
/// Memory: besides <see cref="MergeTensorRequest.Output"/> it rents at most four tensors of the request's shape,
/// whatever the number of models. With sign election the sparsified deltas are computed twice (once for the
/// election, once for the kept sum) instead of being stored per model: magnitude thresholds are remembered from the
/// first pass and random masks are regenerated from the same seed, so both passes see identical deltas.
/// Magnitude thresholds come from <c>kthvalue</c>; entries tied with the threshold are all kept (deterministic,
/// where mergekit's argsort keeps an arbitrary subset of ties).
/// </remarks>
public static class TaskArithmeticCore
{
    /// <summary>Merges one whole tensor (or elementwise block) in place into <see cref="MergeTensorRequest.Output"/>.</summary>
    public static void Merge(MergeTensorRequest request, TaskArithmeticVariant variant, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(variant);
        var baseTensor = RequestChecks.Check(request, variant.Name, variant.Traits)!;
        var count = request.Models.Count;
        var settings = TaskArithmeticSettings.Read(variant, request.Parameters, request.Weights, request.ModelNames, request.TensorName);
        var output = request.Output;
        TaskArithmeticLog.SmallTensorDrops(logger ?? NullLogger.Instance, variant, settings, output.numel(), request.TensorName, request.ModelNames);
        var dtype = output.dtype;

        // Elementwise blocks key the counter stream by the tensor's seed and the element's position in the whole
        // tensor, so DARE's drops do not depend on the host's block size. Callers that set no tensor seed (hosts
        // before 1.1, direct calls) merge whole tensors or independent blocks with the request's own seed.
        var randomSeed = request.TensorSeed != 0 ? request.TensorSeed : request.Seed;
        if (request.ComputesInHalfPrecision)
        {
            HalfPrecisionTaskArithmetic.Merge(request, variant, settings, baseTensor, randomSeed);
            return;
        }
        if (output.numel() > 0 && variant.Streams && TaskArithmeticSession.IsDirect(request))
        {
            using var session = new TaskArithmeticSession(variant, settings, output.numel(), randomSeed, request.TensorName);
            WholeTensor.Run(session, request);
            return;
        }

        using var noGrad = torch.no_grad();
        var delta = request.Scratch.Rent(dtype);
        var mask = variant.Sparsification != SparsificationMethod.None || variant.Consensus != ConsensusMethod.None
            ? request.Scratch.Rent(dtype)
            : null;
        var sparsifier = new DeltaSparsifier(variant, settings, randomSeed, request.ElementStart, request.Scratch, count);

        if (variant.Consensus == ConsensusMethod.None)
        {
            output.zero_();
            double weightSum = 0;
            for (var i = 0; i < count; i++)
            {
                weightSum += settings.Weights[i];
                if (settings.Weights[i] == 0)
                {
                    continue;
                }
                sparsifier.Delta(i, request.Models[i], baseTensor, delta, mask);
                output.add_(delta, alpha: settings.Weights[i]);
            }
            if (settings.Normalize && Math.Abs(weightSum) >= TaskArithmeticSettings.ZeroDivisor)
            {
                output.div_(weightSum);
            }
        }
        else
        {
            ElectAndSum(request, settings, sparsifier, baseTensor, delta, mask!, dtype);
        }

        if (settings.Lambda != 1.0)
        {
            output.mul_(settings.Lambda);
        }
        output.add_(baseTensor);
    }

    private static void ElectAndSum(
        MergeTensorRequest request, TaskArithmeticSettings settings, DeltaSparsifier sparsifier, Tensor baseTensor, Tensor delta, Tensor mask, ScalarType dtype)
    {
        var count = request.Models.Count;
        var output = request.Output;
        var elected = request.Scratch.Rent(dtype);
        var divisor = settings.Normalize ? request.Scratch.Rent(dtype) : null;

        // Pass 1: the sum of weighted deltas decides the sign of every entry (ties at zero elect +1, as mergekit).
        elected.zero_();
        for (var i = 0; i < count; i++)
        {
            if (settings.Weights[i] == 0)
            {
                continue;
            }
            sparsifier.Delta(i, request.Models[i], baseTensor, delta, mask);
            elected.add_(delta, alpha: settings.Weights[i]);
        }
        elected.ge_(0).mul_(2).sub_(1);

        // Pass 2: keep w_i * delta_i where its sign equals the elected sign (zero contributions are never kept).
        output.zero_();
        divisor?.zero_();
        for (var i = 0; i < count; i++)
        {
            var weight = settings.Weights[i];
            if (weight == 0)
            {
                continue;
            }
            sparsifier.Delta(i, request.Models[i], baseTensor, delta, mask);
            mask.copy_(delta).mul_(elected);
            if (weight > 0)
            {
                mask.gt_(0);
            }
            else
            {
                mask.lt_(0);
            }
            output.addcmul_(delta, mask, weight);
            divisor?.add_(mask, alpha: weight);
        }

        if (divisor is not null)
        {
            // Entries where nothing was kept (or kept weights cancel) divide by one instead of zero.
            mask.copy_(divisor).eq_(0);
            divisor.add_(mask);
            output.div_(divisor);
        }
    }
}
