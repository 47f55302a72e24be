using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Linear;

public sealed class LinearPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        services.AddSingleton<IMergeStrategy, LinearStrategy>();
        services.AddSingleton<IMergeStrategy, PassthroughStrategy>();
    }
}

/// <summary>
/// mergekit <c>passthrough</c>: exactly one model's tensor, times its <c>scale</c> when one is given (1, the default,
/// leaves every bit as it is). With per-tensor filters on <c>scale</c> it zeroes or rescales chosen tensors; stacking
/// slices of several models (frankenmerges) needs multi-slice configs, which are not supported yet.
/// </summary>
public sealed class PassthroughStrategy : IMergeStrategy
{
    public string Name => "passthrough";

    public string Description => "One model's tensors as they are, each optionally multiplied by its scale.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("scale", 1.0, ParameterScope.PerModel, "Factor on the model's tensor (1: unchanged)."),
    ];

    /// <summary>
    /// Rounds like mergekit in any compute dtype: its one operation, <c>x * scale</c>, is computed in float32 either way
    /// and rounded once by the host, as torch rounds it in half precision.
    /// </summary>
    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, MinModels: 1, MaxModels: 1, Elementwise: true) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Models.Count != 1 || request.Base is not null)
        {
            throw new ArgumentException($"passthrough: tensor '{request.TensorName}' needs exactly one model and no base model, got {request.Models.Count} model(s){(request.Base is null ? string.Empty : " and a base")}.", nameof(request));
        }
        request.Output.copy_(request.Models[0]);
        var scale = request.Parameters.Float("scale", 0);
        if (scale != 1.0)
        {
            request.Output.mul_(scale);
        }
    }
}

public sealed class LinearStrategy : IMergeStrategy
{
    public string Name => "linear";

    public string Description => "Weighted average of the models.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model in the average."),
        ParameterSpec.Boolean("normalize", true, ParameterScope.Global, "Divide by the sum of the weights."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, Elementwise: true) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.ComputesInHalfPrecision)
        {
            MergeInComputeDType(request);
            return;
        }
        var output = request.Output;
        output.zero_();
        double total = 0;
        for (var i = 0; i < request.Models.Count; i++)
        {
            output.add_(request.Models[i], alpha: request.Weights[i]);
            total += request.Weights[i];
        }
        if (request.Parameters.Boolean("normalize") && Math.Abs(total) > 1e-12)
        {
            output.div_(total);
        }
    }

    /// <summary>
    /// mergekit's linear in a half-precision compute dtype: the weights as a tensor of that dtype (each rounded to it),
    /// <c>(w * x).sum(0)</c> (each product rounded, the sum accumulated in float32 and rounded once), divided by the
    /// weights' sum when normalizing (a sum of magnitude at most 1e-12 is not divided by, as in float32).
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request)
    {
        var dtype = request.ComputeDType;
        var count = request.Models.Count;
        using var noGrad = torch.no_grad();
        var products = request.Scratch.Rent([count, .. request.Output.shape], dtype); // rented outside the scope below
        using var scope = NewDisposeScope();
        var weights = torch.tensor(request.Weights.ToArray(), ScalarType.Float64).to(dtype);
        for (var i = 0; i < count; i++)
        {
            products[i].copy_(request.Models[i]).mul_(weights[i]);
        }
        var merged = products.sum(0L);
        var total = weights.sum();
        if (request.Parameters.Boolean("normalize") && Math.Abs(total.ToSingle()) > 1e-12)
        {
            merged.div_(total);
        }
        request.Output.copy_(merged);
    }
}
