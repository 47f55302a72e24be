using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// Arcee Fusion (mergekit <c>arcee_fusion</c>): with a the base and b the one other model, each entry's importance is
/// <c>|b - a| * KL(softmax(b) || softmax(a))</c> (softmax over the last dimension, each probability plus 1e-8, the
/// divergence per row); entries whose importance reaches median + 1.5 IQR of all importances (quantiles at sorted
/// index floor(q (n - 1))) take the model's value, the others keep the base's. Whole tensors. One difference from
/// mergekit: above a million entries mergekit estimates the quantiles from an unseeded random sample (different on
/// every run); here they are exact, so the merge is deterministic. With a half-precision
/// <see cref="MergeTensorRequest.ComputeDType"/> (<see cref="StrategyTraits.RoundsIntermediates"/>) the same torch
/// operations run on the inputs in that dtype, as mergekit's do: the softmax, <c>+ 1e-8</c>, the ratio, its log, the
/// products and the per-row sum round to the dtype, the quantiles are values of the dtype and the threshold
/// <c>median + 1.5 * iqr</c> rounds; the delta <c>b - a</c> is taken in the dtype, times the float32 mask (float32), plus
/// the base in float32.
/// </summary>
public sealed class ArceeFusionStrategy : IMergeStrategy
{
    public string Name => "arcee_fusion";

    public string Description => "Takes the model's entries whose importance |b - a| x KL(softmax(b) || softmax(a)) is an outlier (>= median + 1.5 IQR), the base's elsewhere.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

    /// <summary>mergekit's arcee_fusion returns float32 (its mask is float32): written so unless an output dtype is asked for.</summary>
    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, MaxModels: 1, Elementwise: false) { WritesFloat32 = true, RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        var a = RequestChecks.Check(request, Name, Traits)!;
        var b = request.Models[0];
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (request.ComputesInHalfPrecision)
        {
            // Exact casts: the host already rounded the inputs to the dtype.
            a = a.to(request.ComputeDType);
            b = b.to(request.ComputeDType);
        }
        var importance = Importance(b, a);
        var mask = importance.ge(Threshold(importance));
        // mergekit's (b - a) * mask.float(): the delta in the inputs' dtype, promoted to float32 by the mask, as is the sum.
        var fused = a.add(b.sub(a).mul(mask.to(ScalarType.Float32)));
        request.Output.copy_(fused);
    }

    /// <summary>|b - a| times the per-row KL divergence of softmax(b) from softmax(a).</summary>
    private static Tensor Importance(Tensor b, Tensor a)
    {
        var p = nn.functional.softmax(b, -1L) + 1e-8;
        var q = nn.functional.softmax(a, -1L) + 1e-8;
        var divergence = (p * (p / q).log()).sum(-1L);
        return (b - a).abs() * divergence.unsqueeze(-1);
    }

    /// <summary>median + 1.5 (q3 - q1) of every value, the quantiles at sorted index floor(q (n - 1)) in float32.</summary>
    private static Tensor Threshold(Tensor importance)
    {
        var sorted = importance.reshape(-1).sort().Values;
        var last = (float)(sorted.numel() - 1);
        Tensor At(float q) => sorted[(long)(q * last)];
        var median = At(0.5f);
        var iqr = At(0.75f) - At(0.25f);
        return median + (iqr * 1.5);
    }
}
