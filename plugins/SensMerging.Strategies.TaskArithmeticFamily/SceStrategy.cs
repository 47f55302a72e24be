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
/// whole-tensor statistics).
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

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, Elementwise: false);

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var topk = request.Parameters.Float("select_topk");
        using var noGrad = no_grad();
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

    /// <summary>mergekit's sce_mask: the top int(nonzero * density) entries by variance across the models (population).</summary>
    private static Tensor Select(Tensor vectors, double density)
    {
        if (density <= 0)
        {
            return zeros_like(vectors[0]);
        }
        var variance = vectors.var(0L, unbiased: false);
        var keep = (long)(count_nonzero(variance).item<long>() * density);
        var mask = zeros_like(variance);
        if (keep == 0)
        {
            return mask;
        }
        var (_, indices) = variance.abs().view(-1).topk((int)keep, largest: true);
        mask.view(-1).index_fill_(0, indices, 1);
        return mask;
    }
}
