namespace SensMerging.Host.Plugins;

/// <summary>
/// Owns one loaded plugin: its service provider (which owns and disposes its components) and its collectible load
/// context. Disposing it disposes the components first, then unloads the plugin's assemblies; the runtime frees them
/// once nothing holds a reference to the plugin's types any more.
/// </summary>
internal sealed class PluginLifetime : IDisposable
{
    private IDisposable? _provider;
    private McMaster.NETCore.Plugins.PluginLoader? _loader;

    public PluginLifetime(IDisposable provider, McMaster.NETCore.Plugins.PluginLoader loader)
    {
        _provider = provider;
        _loader = loader;
    }

    public void Dispose()
    {
        Interlocked.Exchange(ref _provider, null)?.Dispose();
        Interlocked.Exchange(ref _loader, null)?.Dispose();
    }
}
