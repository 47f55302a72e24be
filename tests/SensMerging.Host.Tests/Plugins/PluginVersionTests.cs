using SensMerging.Host.Plugins;

namespace SensMerging.Host.Tests.Plugins;

public sealed class PluginVersionTests
{
    [Theory]
    [InlineData("1.10.0", "1.9.2")]
    [InlineData("2.0", "1.99.99")]
    [InlineData("1.0.1", "1.0")]
    [InlineData("1.0.0", "1.0.0-rc.1")]
    [InlineData("1.0.0-rc.2", "1.0.0-rc.1")]
    [InlineData("1.0.0-rc.10", "1.0.0-rc.9")]
    [InlineData("1.0.0-beta", "1.0.0-alpha.5")]
    [InlineData("1.0.0-alpha.1", "1.0.0-alpha")]
    [InlineData("1.0.0-alpha.beta", "1.0.0-alpha.1")]
    public void Newer_versions_order_above_older_ones(string newer, string older)
    {
        Assert.True(PluginVersion.IsNewer(newer, older));
        Assert.False(PluginVersion.IsNewer(older, newer));
        Assert.True(PluginVersion.Compare(older, newer) < 0);
    }

    [Theory]
    [InlineData("1.2.0", "1.2")]
    [InlineData("1.2.0+build.5", "1.2.0+build.7")]
    [InlineData(" 0.3.0 ", "0.3.0")]
    public void Equal_versions_compare_equal(string a, string b)
    {
        Assert.Equal(0, PluginVersion.Compare(a, b));
        Assert.False(PluginVersion.IsNewer(a, b));
    }
}
