using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace SensMerging.Strategies.Linear;

public sealed class LinearPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, LinearStrategy>();
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

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
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
}
