using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// NearSwap (mergekit <c>nearswap</c>): per element, with a the base and b the one other model,
/// <c>w = clamp(t / max(|a - b|, 1e-6), 0, 1)</c> and <c>out = w * b + (1 - w) * a</c>: the model's value is taken
/// where it lies within t of the base, the base's elsewhere, blended in between. Elementwise, in the operation order of
/// mergekit's code, so float32 merges give its bytes.
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

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, MaxModels: 1, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        var a = RequestChecks.Check(request, Name, Traits)!;
        var b = request.Models[0];
        var t = request.Parameters.Float("t");
        using var noGrad = torch.no_grad();
        var weight = request.Scratch.Rent(request.Output.dtype);
        var other = request.Scratch.Rent(request.Output.dtype);
        other.copy_(a).sub_(b).abs_().clamp_min_(DifferenceFloor);
        weight.fill_(t).div_(other).clamp_(0, 1);
        request.Output.copy_(weight).mul_(b);
        other.copy_(weight).neg_().add_(1).mul_(a);
        request.Output.add_(other);
    }
}
