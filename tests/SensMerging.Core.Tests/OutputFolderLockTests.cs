using SensMerging.Core.Models;

namespace SensMerging.Core.Tests;

public sealed class OutputFolderLockTests
{
    [Fact]
    public void One_holder_at_a_time_and_the_lock_file_goes_with_the_last()
    {
        using var dir = new SafeTensorsTempDir();
        var output = dir.File(Path.Combine("new-parent", "out"));
        using (var held = OutputFolderLock.Acquire(output))
        {
            Assert.Equal(output + ".lock", held.LockPath);
            Assert.True(File.Exists(held.LockPath));
            var busy = Assert.Throws<OutputFolderBusyException>(() => OutputFolderLock.Acquire(output + "/"));
            Assert.Contains($"output folder '{output}' is being written by another merge (it holds '{output}.lock')", busy.Message, StringComparison.Ordinal);
        }
        Assert.False(File.Exists(output + ".lock"));
        using var again = OutputFolderLock.Acquire(output);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void A_given_temporary_folder_must_be_a_partial_sibling_of_the_output()
    {
        using var dir = new SafeTensorsTempDir();
        var output = dir.File("out");
        var work = MergedModelWriter.NewWorkPath(output);
        Assert.True(MergedModelWriter.IsWorkPath(work));
        Assert.StartsWith(output + MergedModelWriter.WorkFolderMarker, work, StringComparison.Ordinal);
        using (var writer = MergedModelWriter.Create(output, overwrite: false, work))
        {
            Assert.Equal(work, writer.WorkPath);
            Assert.True(Directory.Exists(work));
        }
        Assert.False(Directory.Exists(work));
        Assert.Throws<ArgumentException>(() => MergedModelWriter.Create(output, overwrite: false, dir.File("elsewhere")));
        Assert.Throws<ArgumentException>(() => MergedModelWriter.Create(output, overwrite: false, dir.File("other.partial-0123456789ab")));
        Assert.False(MergedModelWriter.IsWorkPath(dir.File("out.partial-xyz")));
    }
}
