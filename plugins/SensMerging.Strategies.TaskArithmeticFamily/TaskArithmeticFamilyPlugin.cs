using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.TaskArithmeticFamily;

/// <summary>
/// Registers one strategy per row of <see cref="TaskArithmeticVariant.All"/>, sce, ram and ramplus_tl (a config's <c>merge_method</c> names the
/// row, not this plugin's id): the whole family shares one load context and one copy of its kernels.
/// </summary>
public sealed class TaskArithmeticFamilyPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        foreach (var variant in TaskArithmeticVariant.All)
        {
            services.AddSingleton(provider => GeneralizedTaskArithmeticStrategy.Create(
                variant, provider.GetRequiredService<ILoggerFactory>().CreateLogger("SensMerging.Strategies." + variant.Name)));
        }
        // SCE works on the same task vectors but weights models by their own statistics, not the table's per-model weights.
        services.AddSingleton<IMergeStrategy, SceStrategy>();
        // RAM and RAM+ count which models contribute to each entry of the task vectors.
        services.AddSingleton<IMergeStrategy>(RamStrategy.Plain());
        services.AddSingleton<IMergeStrategy>(RamStrategy.PlusTensorLocal());
    }
}
