using System.Text.Json;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// A merge that runs for a few seconds on any machine, so that a test can act while it runs: the test plugin's
/// <c>test_scale</c> strategy sleeping <see cref="DelayMs"/> per block, over two tiny models scaled so that the engine
/// cuts them into about 21 blocks (two workers: about 4 s). Cancellation is seen between blocks, so within one delay.
/// </summary>
internal static class SlowMerge
{
    public const int DelayMs = 400;

    /// <summary>Writes a plugins.json that loads only the test plugin, with the delay per block.</summary>
    public static string PluginsFile(string folder, int delayMs = DelayMs)
    {
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, "plugins.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            plugins = new[]
            {
                new
                {
                    id = "test-scale",
                    path = TestPaths.TestPluginFolder,
                    enabled = true,
                    settings = new Dictionary<string, string> { ["factor"] = "1", ["delayMs"] = delayMs.ToString(System.Globalization.CultureInfo.InvariantCulture) },
                },
            },
        }));
        return path;
    }

    /// <summary>Two models under <paramref name="parent"/> and a config merging them (written beside them unless <paramref name="configFolder"/>).</summary>
    public static (string Config, string A, string B) Write(string parent, string? configFolder = null)
    {
        var a = Path.Combine(parent, "expert-a");
        var b = Path.Combine(parent, "expert-b");
        TinyModels.Write(a, 2, scaleShape: [2048]);
        TinyModels.Write(b, 3, scaleShape: [2048]);
        configFolder ??= parent;
        Directory.CreateDirectory(configFolder);
        var config = Path.Combine(configFolder, "slow.yaml");
        File.WriteAllText(config, $"merge_method: test_scale\nmodels:\n  - model: {a}\n  - model: {b}\n");
        return (config, a, b);
    }
}
