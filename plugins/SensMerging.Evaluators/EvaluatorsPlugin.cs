using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace SensMerging.Evaluators;

/// <summary>Registers the evaluation scorers <c>exact_match</c> and <c>perplexity</c>.</summary>
public sealed class EvaluatorsPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        services.AddSingleton<IScorer, ExactMatchScorer>();
        services.AddSingleton<IScorer, PerplexityScorer>();
    }
}
