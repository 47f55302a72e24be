using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using TorchSharp;

namespace MyStrategy;

/// <summary>The plugin's one configurator: registers its components as singletons.</summary>
public sealed class Plugin : IPluginConfigurator
{
    /// <inheritdoc />
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, Strategy>();
}

/// <summary>
/// An elementwise strategy (task arithmetic): <c>out = base + lambda * sum_i w_i * (x_i - base)</c>, where <c>w_i</c> is
/// <see cref="MergeTensorRequest.Weights"/>[i]: the configured <c>weight</c> times any decorator's coefficient.
/// Each output element depends on the same element of the inputs only, so the host may hand it row blocks of a tensor.
/// </summary>
public sealed class Strategy : IMergeStrategy
{
    /// <summary>What a config's <c>merge_method</c> names (not the plugin id).</summary>
    public string Name => "my_component";

    /// <inheritdoc />
    public string Description => "Task arithmetic: base + lambda * sum of weighted task vectors.";

    /// <inheritdoc />
    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model's task vector."),
        ParameterSpec.Float("lambda", 1.0, ParameterScope.Global, "Scale of the merged task vector.", min: 0),
    ];

    /// <inheritdoc />
    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: true);

    /// <inheritdoc />
    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var baseTensor = request.Base ?? throw new ArgumentException($"{Name} needs a base model", nameof(request));
        using var noGrad = torch.no_grad();
        // A rented temporary: owned by the host's scratch pool, never disposed here, valid until Merge returns.
        var delta = request.Scratch.Rent();
        request.Output.zero_();
        for (var i = 0; i < request.Models.Count; i++)
        {
            delta.copy_(request.Models[i]).sub_(baseTensor);
            request.Output.add_(delta, alpha: request.Weights[i]);
        }
        // In-place operations return the tensor they modified, not a new one: nothing to dispose.
        request.Output.mul_(request.Parameters.Float("lambda")).add_(baseTensor);
    }
}
