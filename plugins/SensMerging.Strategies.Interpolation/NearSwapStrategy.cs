using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// NearSwap (mergekit <c>nearswap</c>): per element, with a the base and b the one other model,
/// <c>w = clamp(t / max(|a - b|, 1e-6), 0, 1)</c> and <c>out = w * b + (1 - w) * a</c>: the model's value is taken
/// where it lies within t of the base, the base's elsewhere, blended in between. Elementwise. In float32 it divides t by
/// the floored difference as mergekit's <c>t / d</c> does, <c>d.reciprocal() * t</c> (Python's float over a tensor; a
/// division would differ from it by one unit in the last place of w). With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> it runs mergekit's torch operations
/// in that dtype (<see cref="StrategyTraits.RoundsIntermediates"/>), so each rounds its result as there: the difference,
/// the floor (1e-6 rounded to the dtype, as torch's clamp casts its bound), <c>t / d</c> as Python evaluates a float over a
/// tensor (<c>d.reciprocal() * t</c>: the reciprocal rounded, t entering the product as a float32), the clamp, both
/// products, <c>1 - w</c> and the sum.
/// </summary>
public sealed class NearSwapStrategy : IMergeStrategy
{
    /// <summary>Floor of |a - b| (mergekit's clamp).</summary>
    public const double DifferenceFloor = 1e-6;

    public string Name => "nearswap";

    public string Description => "Per element: the model's value where it is within t of the base, the base's elsewhere (w = clamp(t / |base - model|, 0, 1)).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("t", null, ParameterScope.Global, "Distance from the base within which the model's value is taken whole.", min: 0),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, MaxModels: 1, Elementwise: true) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        var a = RequestChecks.Check(request, Name, Traits)!;
        var b = request.Models[0];
        var t = request.Parameters.Float("t");
        using var noGrad = torch.no_grad();
        if (request.ComputesInHalfPrecision)
        {
            MergeInComputeDType(request, a, b, t);
            return;
        }
        var weight = request.Scratch.Rent(request.Output.dtype);
        var other = request.Scratch.Rent(request.Output.dtype);
        other.copy_(a).sub_(b).abs_().clamp_min_(DifferenceFloor);
        // mergekit's t / d is Python's float over a tensor, d.reciprocal() * t: the reciprocal rounded, then the product.
        weight.copy_(other).reciprocal_().mul_(t).clamp_(0, 1);
        request.Output.copy_(weight).mul_(b);
        other.copy_(weight).neg_().add_(1).mul_(a);
        request.Output.add_(other);
    }

    /// <summary>
    /// mergekit's <c>weight = (t / abs(a - b).clamp(min=1e-6)).clamp(0, 1)</c>, <c>weight * b + (1 - weight) * a</c> on
    /// tensors of the compute dtype. <c>t / tensor</c> is Python's <c>Tensor.__rtruediv__</c>, which torch defines as
    /// <c>reciprocal() * t</c>; the product is taken out of place so that t enters it as a float32 (torch's opmath for a
    /// Python scalar), where libtorch's in-place <c>mul_(Scalar)</c> would round it to the dtype first.
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request, torch.Tensor a, torch.Tensor b, double t)
    {
        var dtype = request.ComputeDType;
        // Rented outside the dispose scope below (disposing it must not dispose them); the copies are exact: the host
        // already rounded the inputs to the dtype.
        var baseValues = request.Scratch.Rent(dtype).copy_(a);
        var model = request.Scratch.Rent(dtype).copy_(b);
        using var scope = torch.NewDisposeScope();
        var weight = baseValues.sub(model).abs_().clamp_min_(DifferenceFloor).reciprocal_().mul(t).clamp_(0, 1);
        var merged = weight.mul(model).add_(weight.neg().add_(1).mul_(baseValues));
        request.Output.copy_(merged);
    }
}
