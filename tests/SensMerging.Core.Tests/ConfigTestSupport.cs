using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Core.Tests;

/// <summary>Strategies with the parameter specs the real plugins declare, for config tests (no tensor math).</summary>
internal sealed class SpecOnlyStrategy(string name, StrategyTraits traits, params ParameterSpec[] parameters) : IMergeStrategy
{
    public string Name => name;

    public string Description => "spec-only strategy for config tests";

    public IReadOnlyList<ParameterSpec> Parameters => parameters;

    public StrategyTraits Traits => traits;

    public void Merge(MergeTensorRequest request) => throw new NotSupportedException("config tests do not merge");

    private static ParameterSpec Weight => ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "weight");

    private static ParameterSpec Normalize(bool value) => ParameterSpec.Boolean("normalize", value, ParameterScope.Global, "normalize");

    /// <summary>
    /// The task-arithmetic family's real strategies (their parameters come from its table); the others as spec-only
    /// strategies declaring what their plugins declare.
    /// </summary>
    public static IMergeStrategy For(string method) =>
        TaskArithmeticVariant.All.FirstOrDefault(v => v.Name == method) is { } variant
            ? GeneralizedTaskArithmeticStrategy.Create(variant)
            : Other(method);

    private static SpecOnlyStrategy Other(string method) => method switch
    {
        "linear" => new(method, new(false, Elementwise: true), Weight, Normalize(true)),
        "slerp" => new(method, new(true, 1, 1), ParameterSpec.Float("t", null, ParameterScope.Global, "t", 0, 1), Weight),
        "model_stock" => new(method, new(true, 2), Weight, ParameterSpec.Boolean("filter_wise", false, ParameterScope.Global, "filter_wise")),
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "no spec-only strategy"),
    };
}
