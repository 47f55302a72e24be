using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.TaskArithmeticFamily;

/// <summary>
/// SCE (mergekit <c>sce</c>, FuseChat: select, calculate, erase) over the task vectors t_i = x_i - base: with
/// <c>select_topk</c> &lt; 1 only the entries whose variance across the models is among the top fraction of the
/// non-zero variances are kept (in every t_i); each model gets the weight mean(t_i^2) normalized to sum 1 (uniform when
/// that sum is under 1e-6); entries whose sign disagrees with the sign of sum_i t_i are erased; the result is
/// <c>base + sum_i w_i m_i t_i / max(sum_i w_i m_i, 1e-6)</c>. The configured weights are not used (mergekit's are
/// not either). Whole tensors, with libtorch in the order of mergekit's code (the variance top-k and the weights are
/// whole-tensor statistics). With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> the same operations run in
/// that dtype (<see cref="StrategyTraits.RoundsIntermediates"/>), each rounding its result as mergekit's torch does.
/// </summary>
public sealed class SceStrategy : IMergeStrategy
{
    public string Name => "sce";

    public string Description => "SCE: keep the entries of highest variance across the task vectors, weight each model by its mean squared task vector, erase minority signs, average.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("select_topk", 1.0, ParameterScope.Global, "Fraction of the entries (by variance across the models, among the non-zero ones) kept.", min: 0, max: 1),
        ParameterSpec.Boolean("int8_mask", false, ParameterScope.Global, "Accepted for mergekit compatibility; the masks are float here, the result is the same."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, Elementwise: false) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var topk = request.Parameters.Float("select_topk");
        using var noGrad = no_grad();
        if (request.ComputesInHalfPrecision)
        {
            MergeInComputeDType(request, baseTensor, topk);
            return;
        }
        using var scope = NewDisposeScope();
        var k = request.Models.Count;
        var vectors = stack([.. request.Models.Select(m => m - baseTensor)], 0);
        if (topk < 1)
        {
            vectors = vectors * Select(vectors, topk).unsqueeze(0);
        }
        // (0L, not 0: a literal 0 would bind to the ScalarType overload and sum everything)
        var majority = vectors.sum(0L).ge(0).to(vectors.dtype) * 2 - 1;
        var erase = vectors.sign().eq(majority).to(vectors.dtype);
        var dims = Enumerable.Range(1, (int)vectors.dim() - 1).Select(d => (long)d).ToArray();
        var weights = dims.Length == 0 ? vectors.pow(2) : vectors.pow(2).mean(dims);
        var weightSum = weights.sum().item<float>();
        weights = Math.Abs(weightSum) < 1e-6 ? ones_like(weights) / k : weights / weightSum;
        while (weights.dim() < vectors.dim())
        {
            weights = weights.unsqueeze(-1);
        }
        var erased = weights * erase;
        var merged = (vectors * erased).sum(0L);
        var final = merged / erased.sum(0L).clamp_min(1e-6);
        request.Output.copy_(baseTensor + final);
    }

    /// <summary>
    /// mergekit's sce_mask, in the vectors' dtype: the variance across the models (population, torch's <c>var</c>), the
    /// count of its non-zero entries times the density as a float32 product truncated (Python's <c>int(tensor * float)</c>:
    /// an int64 tensor times a float is a float32 tensor), the top that many by magnitude set to 1 in a mask of the dtype.
    /// </summary>
    private static Tensor Select(Tensor vectors, double density)
    {
        if (density <= 0)
        {
            return zeros_like(vectors[0]);
        }
        var variance = vectors.var(0L, unbiased: false);
        var keep = (long)((float)count_nonzero(variance).item<long>() * (float)density);
        var mask = zeros_like(variance);
        if (keep == 0)
        {
            return mask;
        }
        var (_, indices) = variance.abs().view(-1).topk((int)keep, largest: true);
        mask.view(-1).index_fill_(0, indices, 1);
        return mask;
    }

    /// <summary>
    /// mergekit's sce on tensors of the compute dtype, each operation rounding its result: <c>t_i = x_i - base</c> stacked;
    /// with select_topk &lt; 1 the variance mask (<see cref="Select"/>) multiplied in; the majority sign of
    /// <c>t.sum(0)</c> (float32 accumulation, rounded once) and the erase mask <c>sign(t) == majority</c>; the weights
    /// <c>mean(t^2)</c> per model (torch's mean: a float32 sum over the tensor, divided, rounded), their sum taken as a
    /// Python float and each weight divided by it (or <c>1 / k</c> each when it is under 1e-6); <c>(t * w * erase).sum(0)</c>
    /// divided by <c>(w * erase).sum(0).clamp(min=1e-6)</c> (the bound cast to the dtype), plus the base.
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request, Tensor baseTensor, double topk)
    {
        var dtype = request.ComputeDType;
        var k = request.Models.Count;
        // Rented outside the dispose scope below (disposing it must not dispose them); copies exact: the host already
        // rounded the inputs to the dtype.
        var baseValues = request.Scratch.Rent(dtype).copy_(baseTensor);
        var stacked = request.Scratch.Rent([k, .. baseTensor.shape], dtype);
        for (var i = 0; i < k; i++)
        {
            using var row = stacked[i];
            row.copy_(request.Models[i]).sub_(baseValues);
        }
        using var scope = NewDisposeScope();
        var vectors = topk < 1 ? stacked.mul(Select(stacked, topk).unsqueeze(0)) : stacked;
        var majority = vectors.sum(0L).ge(0).to(dtype).mul(2).sub(1);
        var erase = vectors.sign().eq(majority);
        var dims = Enumerable.Range(1, (int)vectors.dim() - 1).Select(d => (long)d).ToArray();
        var squares = vectors.pow(2);
        var weights = dims.Length == 0 ? squares : squares.mean(dims);
        var weightSum = weights.sum().to_type(ScalarType.Float64).item<double>();
        weights = Math.Abs(weightSum) < 1e-6 ? ones_like(weights).div(k) : weights.div(weightSum);
        while (weights.dim() < vectors.dim())
        {
            weights = weights.unsqueeze(-1);
        }
        var erased = weights.mul(erase);
        var merged = vectors.mul(erased).sum(0L);
        var final = merged.div(erased.sum(0L).clamp_min(1e-6));
        request.Output.copy_(baseValues.add(final));
    }
}
