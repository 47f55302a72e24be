using SensMerging.Abstractions;

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

    private static ParameterSpec Density => ParameterSpec.Float("density", 1.0, ParameterScope.PerModel, "density", 0, 1);

    private static ParameterSpec Lambda => ParameterSpec.Float("lambda", 1.0, ParameterScope.Global, "lambda");

    private static ParameterSpec Normalize(bool value) => ParameterSpec.Boolean("normalize", value, ParameterScope.Global, "normalize");

    private static ParameterSpec Int8Mask => ParameterSpec.Boolean("int8_mask", false, ParameterScope.Global, "int8_mask");

    public static SpecOnlyStrategy For(string method) => method switch
    {
        "linear" => new(method, new(false, Elementwise: true), Weight, Normalize(true)),
        "task_arithmetic" => new(method, new(true), Weight, Lambda, Normalize(false), Int8Mask),
        "ties" => new(method, new(true), Weight, Density, Lambda, Normalize(true), Int8Mask),
        "dare_ties" or "dare_linear" => new(method, new(true, UsesRandomness: true), Weight, Density, Lambda, Normalize(false),
            ParameterSpec.Boolean("rescale", true, ParameterScope.Global, "rescale"), Int8Mask),
        "breadcrumbs" or "breadcrumbs_ties" => new(method, new(true), Weight, Density,
            ParameterSpec.Float("gamma", 0.01, ParameterScope.PerModel, "gamma", 0, 1), Lambda, Normalize(false), Int8Mask),
        "slerp" => new(method, new(true, 1, 1), ParameterSpec.Float("t", null, ParameterScope.Global, "t", 0, 1), Weight),
        "model_stock" => new(method, new(true, 2), Weight),
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "no spec-only strategy"),
    };
}
