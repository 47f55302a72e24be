using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.TaskArithmeticFamily;

/// <summary>
/// Reinforced Agent Merging (mergekit <c>ram</c> and <c>ramplus_tl</c>, arXiv 2601.13572) over the task vectors
/// t_i = x_i - base. An entry of t_i counts when |t_i| &gt; epsilon; an entry counted by one model only is taken as it is,
/// one counted by several is their mean, one counted by none stays at the base. <c>ramplus_tl</c> (tensor-local) also
/// scales each model's unique entries by lambda_i = 1 + r clamp(rho_i, 0, alpha), with rho_i the ratio of the model's
/// shared to unique counted entries in this tensor. The configured weights are not used (mergekit's are not either).
/// <c>ram</c> is elementwise (row blocks stream); <c>ramplus_tl</c> takes whole tensors (rho_i counts the whole tensor).
/// </summary>
public sealed class RamStrategy : IMergeStrategy
{
    private readonly bool _plus;

    private RamStrategy(bool plus)
    {
        _plus = plus;
        Parameters = plus
            ? [R, Alpha, Epsilon]
            : [Epsilon];
        Traits = new StrategyTraits(RequiresBaseModel: true, MinModels: 1, Elementwise: !plus);
    }

    /// <summary>mergekit's <c>ram</c>.</summary>
    public static RamStrategy Plain() => new(plus: false);

    /// <summary>mergekit's <c>ramplus_tl</c>.</summary>
    public static RamStrategy PlusTensorLocal() => new(plus: true);

    private static readonly ParameterSpec Epsilon = ParameterSpec.Float(
        "epsilon", 1e-5, ParameterScope.Global, "A task-vector entry counts as a contribution when its magnitude is above this.", min: 0);

    private static readonly ParameterSpec R = ParameterSpec.Float(
        "r", 0.1, ParameterScope.Global, "Strength of the boost of each model's unique entries (lambda = 1 + r clamp(rho, 0, alpha)).");

    private static readonly ParameterSpec Alpha = ParameterSpec.Float(
        "alpha", 0.2, ParameterScope.Global, "Upper clamp of rho, the ratio of a model's shared to unique entries in the tensor.");

    public string Name => _plus ? "ramplus_tl" : "ram";

    public string Description => _plus
        ? "RAM+ (tensor-local): RAM, with each model's unique entries boosted by how much of its task vector is shared."
        : "RAM: task-vector entries given by one model are kept, entries given by several are averaged.";

    public IReadOnlyList<ParameterSpec> Parameters { get; }

    public StrategyTraits Traits { get; }

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var epsilon = request.Parameters.Float("epsilon");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var vectors = stack([.. request.Models.Select(m => (m - baseTensor).view(-1))], 0);
        var counted = vectors.abs().gt(epsilon);
        var counts = counted.sum(0L, keepdim: true);
        var overlap = counts.gt(1);
        var unique = counts.eq(1);
        var zeroed = vectors * counted;
        var uniquePart = zeroed * unique;
        if (_plus)
        {
            var shared = counted.logical_and(overlap).sum(1L).to_type(ScalarType.Float32);
            var alone = counted.logical_and(unique).sum(1L).to_type(ScalarType.Float32);
            var rho = shared / alone.clamp_min(epsilon);
            var lambda = (rho.clamp(0, request.Parameters.Float("alpha")) * request.Parameters.Float("r")) + 1;
            uniquePart = uniquePart * lambda.unsqueeze(-1);
        }
        var merged = (uniquePart + (zeroed * overlap / counts.clamp_min(1))).sum(0L);
        request.Output.copy_(baseTensor + merged.view(baseTensor.shape));
    }
}
