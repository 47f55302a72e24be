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
/// Streams (<see cref="IStreamingMergeStrategy"/>): one statistics pass gathers both norms and the dot product
/// (<see cref="BlockGram"/>, double precision), then every block is <c>s0 * base + s1 * model</c>; the whole-tensor
/// merge runs the same code over one block.
/// </summary>
public sealed class SlerpStrategy : IStreamingMergeStrategy
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

    public void Merge(MergeTensorRequest request) => WholeTensor.Merge(this, request);

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        var t = tensor.Parameters.Float("t");
        if (!(t >= 0 && t <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(tensor), $"slerp: parameter 't' for tensor '{tensor.TensorName}' is {t}, outside [0, 1]");
        }
        return new Session(this, Math.Clamp(t * tensor.Weights[0], 0.0, 1.0));
    }

    /// <summary>The coefficients of base and model in the result for interpolation factor <paramref name="t"/>.</summary>
    public static (double Base, double Model) Coefficients(double baseNorm, double modelNorm, double dot, double t)
    {
        var cos = dot / ((baseNorm > NormEpsilon ? baseNorm : 1.0) * (modelNorm > NormEpsilon ? modelNorm : 1.0));
        if (Math.Abs(cos) > ColinearThreshold || !double.IsFinite(cos))
        {
            return (1 - t, t);
        }
        var theta = Math.Acos(cos);
        var sinTheta = Math.Sin(theta);
        return (Math.Sin(theta * (1 - t)) / sinTheta, Math.Sin(theta * t) / sinTheta);
    }

    private sealed class Session(SlerpStrategy strategy, double factor) : ITensorMergeSession
    {
        // The ends need no statistics: the result is one of the inputs.
        private readonly BlockGram? _gram = factor is 0 or 1 ? null : new BlockGram(2);
        private (double Base, double Model)? _coefficients;

        public bool BeginPass(int pass)
        {
            if (_gram is null || pass > 0)
            {
                _coefficients ??= _gram is null ? (1 - factor, factor) : Coefficients(_gram.Norm(0), _gram.Norm(1), _gram.Sum(0, 1), factor);
                return false;
            }
            return true;
        }

        public void Observe(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            _gram?.Add([baseBlock, block.Models[0]], null, block.ElementStart);
        }

        public void Merge(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            var (s0, s1) = _coefficients ?? throw new InvalidOperationException(
                $"slerp: tensor '{block.TensorName}': Merge was called before the statistics pass ended (call BeginPass until it returns false).");
            using var noGrad = torch.no_grad();
            if (factor == 0)
            {
                block.Output.copy_(baseBlock);
            }
            else if (factor == 1)
            {
                block.Output.copy_(block.Models[0]);
            }
            else
            {
                block.Output.copy_(baseBlock).mul_(s0).add_(block.Models[0], alpha: s1);
            }
        }

        public void Dispose()
        {
        }
    }
}
