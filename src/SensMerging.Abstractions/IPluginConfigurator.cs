using Microsoft.Extensions.DependencyInjection;

namespace SensMerging.Abstractions;

/// <summary>
/// The one type through which a plugin registers its components. The host finds the configurator named in
/// the plugin's manifest (or the single public implementation in the main assembly), creates it and calls
/// <see cref="ConfigureServices"/>. Register components as singletons of <see cref="IMergeStrategy"/>,
/// <see cref="IScorer"/> or <see cref="IStrategyDecorator"/>; the host resolves them from a container of the
/// plugin's own, which also offers <c>ILogger&lt;T&gt;</c> and the <see cref="PluginContext"/>.
/// </summary>
public interface IPluginConfigurator
{
    /// <summary>
    /// Registers the plugin's components in <paramref name="services"/>. Called once, when the plugin is loaded, before
    /// any component is resolved.
    /// </summary>
    /// <param name="services">The plugin's own service collection; add components as singletons.</param>
    /// <param name="context">The plugin's id, folder and settings.</param>
    void ConfigureServices(IServiceCollection services, PluginContext context);
}

/// <summary>What the host tells a plugin about itself when it is configured.</summary>
/// <param name="PluginId">The id from the manifest and plugins.json.</param>
/// <param name="PluginDirectory">The folder the plugin was loaded from.</param>
/// <param name="Settings">The optional settings given to the plugin in plugins.json.</param>
public sealed record PluginContext(string PluginId, string PluginDirectory, IReadOnlyDictionary<string, string> Settings);
