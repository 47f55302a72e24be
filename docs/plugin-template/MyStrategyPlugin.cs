using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace MyStrategy;

/// <summary>The plugin's one configurator: registers its components.</summary>
public sealed class MyStrategyPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, MyStrategy>();
}

/// <summary>Example: task arithmetic with a per-model weight and a global scale.</summary>
public sealed class MyStrategy : IMergeStrategy
{
    public string Name => "my_strategy";

    public string Description => "Task arithmetic, as a starting point.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model's task vector."),
        ParameterSpec.Float("lambda", 1.0, ParameterScope.Global, "Scale of the merged task vector.", min: 0),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var baseTensor = request.Base!;
        var delta = request.Scratch.Rent();
        request.Output.zero_();
        for (var i = 0; i < request.Models.Count; i++)
        {
            delta.copy_(request.Models[i]).sub_(baseTensor);
            request.Output.add_(delta, alpha: request.Weights[i]);
        }
        request.Output.mul_(request.Parameters.Float("lambda")).add_(baseTensor);
    }
}
