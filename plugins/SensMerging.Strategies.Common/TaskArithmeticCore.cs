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
/// Two implementations with the same math: contiguous CPU float32 tensors (the common case) go through
/// <see cref="FusedTaskArithmetic"/>, one fused pass in managed code with a radix-select threshold and a counter-based
/// random stream for DARE (<see cref="CounterRandom"/>, keyed by <c>Seed + modelIndex</c> and the element index);
/// anything else (GPU, other dtypes, strided views) runs the in-place libtorch path below, whose DARE masks come from
/// a <c>torch.Generator</c> seeded <c>Seed + modelIndex</c>. Both are byte-for-byte reproducible for a given seed, but
/// their DARE masks differ from each other.
/// Memory: besides <see cref="MergeTensorRequest.Output"/> it rents at most four tensors of the request's shape,
/// whatever the number of models. With sign election the sparsified deltas are computed twice (once for the
/// election, once for the kept sum) instead of being stored per model: magnitude thresholds are remembered from the
/// first pass and random masks are regenerated from the same seed, so both passes see identical deltas.
/// Magnitude thresholds come from <c>kthvalue</c>; entries tied with the threshold are all kept (deterministic,
/// where mergekit's argsort keeps an arbitrary subset of ties).
/// </remarks>
public static class TaskArithmeticCore
{
    /// <summary>Divisors smaller than this (plain sums) count as zero, as in mergekit.</summary>
    private const double ZeroDivisor = 1e-8;

    public static void Merge(MergeTensorRequest request, TaskArithmeticVariant variant)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(variant);
        var baseTensor = RequestChecks.Check(request, variant.Name, variant.Traits)!;
        var count = request.Models.Count;
        var settings = ReadSettings(request, variant, count);
        var output = request.Output;
        var dtype = output.dtype;

        if (FusedTaskArithmetic.TryMerge(request, variant, settings, baseTensor))
        {
            return;
        }

        using var noGrad = torch.no_grad();
        var delta = request.Scratch.Rent(dtype);
        var mask = variant.Sparsification != SparsificationMethod.None || variant.Consensus != ConsensusMethod.None
            ? request.Scratch.Rent(dtype)
            : null;
        var sparsifier = new DeltaSparsifier(variant, settings, request.Seed, count);

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
            if (settings.Normalize && Math.Abs(weightSum) >= ZeroDivisor)
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

    private static TaskArithmeticSettings ReadSettings(MergeTensorRequest request, TaskArithmeticVariant variant, int count)
    {
        var p = request.Parameters;
        var densities = new double[count];
        var gammas = new double[count];
        for (var i = 0; i < count; i++)
        {
            densities[i] = variant.Sparsification == SparsificationMethod.None
                ? 1.0
                : RequestChecks.FloatInRange(request, variant.Name, "density", i, 0, 1);
            gammas[i] = variant.Sparsification == SparsificationMethod.MagnitudeOutliers
                ? RequestChecks.FloatInRange(request, variant.Name, "gamma", i, 0, 1)
                : 0;
        }
        var lambda = p.Has("lambda") ? p.Float("lambda") : 1.0;
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(request), $"{variant.Name}: parameter 'lambda' is not finite ({lambda})");
        }
        return new TaskArithmeticSettings(
            Weights: [.. request.Weights],
            Densities: densities,
            Gammas: gammas,
            Lambda: lambda,
            Normalize: p.Has("normalize") ? p.Boolean("normalize") : variant.DefaultNormalize,
            Rescale: variant.Sparsification == SparsificationMethod.Random && (p.Has("rescale") ? p.Boolean("rescale") : variant.DefaultRescale));
    }
}

/// <summary>The numbers one merge of one tensor runs with.</summary>
internal sealed record TaskArithmeticSettings(double[] Weights, double[] Densities, double[] Gammas, double Lambda, bool Normalize, bool Rescale);
