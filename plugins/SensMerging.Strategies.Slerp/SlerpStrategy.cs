using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;

namespace SensMerging.Strategies.Slerp;

public sealed class SlerpPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, SlerpStrategy>();
}

/// <summary>
/// Spherical linear interpolation from the base (t = 0) to the one other model (t = 1), over the whole tensor as one
/// flattened vector: the angle comes from the normalized directions, the result combines the original (unnormalized)
/// tensors; nearly colinear directions (|cos| &gt; 0.9995) fall back to linear interpolation, as in mergekit.
/// The model's weight steers the interpolation: the effective factor is <c>clamp(t * weight, 0, 1)</c>, so weight 1
/// is plain slerp and a decorator coefficient moves the result toward (or away from) the model.
/// </summary>
public sealed class SlerpStrategy : IMergeStrategy
{
    /// <summary>Above this |cos| the directions count as colinear.</summary>
    public const double ColinearThreshold = 0.9995;

    /// <summary>Norms at or below this are not normalized (mergekit's eps).</summary>
    public const double NormEpsilon = 1e-8;

    public string Name => "slerp";

    public string Description => "Spherical interpolation between the base (t = 0) and one model (t = 1); effective t = clamp(t * weight, 0, 1).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("t", null, ParameterScope.Global, "Interpolation factor: 0 gives the base, 1 the model.", min: 0, max: 1),
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Multiplies t (decorators steer slerp through it); the product is clamped to [0, 1]."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 1, MaxModels: 1, Elementwise: false);

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var model = request.Models[0];
        var t = request.Parameters.Float("t");
        if (!(t >= 0 && t <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(request), $"slerp: parameter 't' for tensor '{request.TensorName}' is {t}, outside [0, 1]");
        }
        var factor = Math.Clamp(t * request.Weights[0], 0.0, 1.0);
        var output = request.Output;

        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        if (factor == 0)
        {
            output.copy_(baseTensor);
            return;
        }
        if (factor == 1)
        {
            output.copy_(model);
            return;
        }
        var (s0, s1) = Coefficients(baseTensor, model, factor);
        output.copy_(baseTensor).mul_(s0).add_(model, alpha: s1);
    }

    /// <summary>The coefficients of base and model in the result for interpolation factor <paramref name="t"/>.</summary>
    private static (double Base, double Model) Coefficients(torch.Tensor v0, torch.Tensor v1, double t)
    {
        var n0 = v0.norm().ToDouble();
        var n1 = v1.norm().ToDouble();
        var dot = v0.reshape(-1).dot(v1.reshape(-1)).ToDouble();
        var cos = dot / ((n0 > NormEpsilon ? n0 : 1.0) * (n1 > NormEpsilon ? n1 : 1.0));
        if (Math.Abs(cos) > ColinearThreshold || !double.IsFinite(cos))
        {
            return (1 - t, t);
        }
        var theta = Math.Acos(cos);
        var sinTheta = Math.Sin(theta);
        return (Math.Sin(theta * (1 - t)) / sinTheta, Math.Sin(theta * t) / sinTheta);
    }
}
