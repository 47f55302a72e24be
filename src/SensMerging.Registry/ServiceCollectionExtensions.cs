using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace SensMerging.Registry;

/// <summary>Registers the merge registry.</summary>
public static class RegistryServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="IMergeRegistry"/> (a <see cref="LiteDbMergeRegistry"/> singleton in shared mode, opened on first
    /// use) for the file at <paramref name="path"/> (default <c>registry/merges.db</c>).
    /// </summary>
    public static IServiceCollection AddMergeRegistry(this IServiceCollection services, string path = RegistryOptions.DefaultPath) =>
        services.AddMergeRegistry(o => o.Path = path);

    /// <summary>Adds <see cref="IMergeRegistry"/> with options set by <paramref name="configure"/>.</summary>
    public static IServiceCollection AddMergeRegistry(this IServiceCollection services, Action<RegistryOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddSingleton(sp =>
        {
            var options = new RegistryOptions();
            configure(options);
            return LiteDbMergeRegistry.Open(options, sp.GetService<ILogger<LiteDbMergeRegistry>>());
        });
        services.AddSingleton<IMergeRegistry>(sp => sp.GetRequiredService<LiteDbMergeRegistry>());
        return services;
    }
}
