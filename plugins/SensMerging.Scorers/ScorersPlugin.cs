using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace SensMerging.Scorers;

/// <summary>Registers the three Sens-Merging scorers: <c>sensitivity</c>, <c>fisher</c> and <c>logit_alignment</c>.</summary>
public sealed class ScorersPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        services.AddSingleton<IScorer, SensitivityScorer>();
        services.AddSingleton<IScorer, FisherScorer>();
        services.AddSingleton<IScorer, LogitAlignmentScorer>();
    }
}
