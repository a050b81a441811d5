# schoolproxy logon feed — sets up a PC to report who logs on to it. Run as SYSTEM at every start-up
# (Group Policy: Computer Configuration > Policies > Windows Settings > Scripts (Startup/Shutdown) >
# Startup > PowerShell Scripts), or once by an administrator. See README.md beside this file.
#
# It copies the feed's secret from a share only computer accounts can read into a folder only SYSTEM and
# Administrators can read, puts feed-task.ps1 where users cannot change it, and registers two scheduled
# tasks that run it as SYSTEM: at every logon and at every logoff. No user ever runs anything, and no user
# can read the secret: a pupil who reads everything their own logon reads learns nothing to report with.
param(
    # identity.logon_feed.listen on the gateway.
    [Parameter(Mandatory = $true)] [string]$Gateway,
    # The secret, on a share whose read permission is Domain Computers (and admins) only — never Domain
    # Users or Authenticated Users (which includes every user).
    [Parameter(Mandatory = $true)] [string]$SecretFile,
    # feed-task.ps1 (NETLOGON is fine: it holds no secret). Default: beside this script.
    [string]$TaskScript = (Join-Path $PSScriptRoot "feed-task.ps1")
)
$ErrorActionPreference = "Stop"
$folder = Join-Path $env:ProgramData "schoolproxy"
$private = Join-Path $folder "private"

function Protect-Folder([string]$Path, [bool]$UsersMayRead) {
    # Owned by Administrators (an owner could rewrite the permissions), nothing inherited from above, and
    # only SYSTEM and Administrators may write (Users read and run, where allowed). By SID: any language.
    & icacls.exe $Path /setowner "*S-1-5-32-544" /T /C /Q | Out-Null
    $grants = @("*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F")
    if ($UsersMayRead) { $grants += "*S-1-5-32-545:(OI)(CI)RX" }
    & icacls.exe $Path /inheritance:r /grant:r $grants /Q | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls could not protect $Path" }
}

try {
    # Start afresh each time: anything a user placed or changed here (ProgramData lets users create
    # folders) is removed before SYSTEM runs a script from it.
    if (Test-Path -LiteralPath $folder) { Remove-Item -LiteralPath $folder -Recurse -Force }
    New-Item -ItemType Directory -Path $folder | Out-Null
    Protect-Folder $folder $true
    New-Item -ItemType Directory -Path $private | Out-Null
    Protect-Folder $private $false

    $secret = (Get-Content -Raw -LiteralPath $SecretFile).Trim()
    if ($secret.Length -lt 16) { throw "$SecretFile does not hold the feed's secret (at least 16 characters)" }
    Set-Content -LiteralPath (Join-Path $private "feed-secret.txt") -Value $secret -Encoding ASCII
    $script = Join-Path $folder "feed-task.ps1"
    Copy-Item -LiteralPath $TaskScript -Destination $script -Force

    if (-not [System.Diagnostics.EventLog]::SourceExists("schoolproxy")) {
        New-EventLog -LogName Application -Source "schoolproxy"
    }

    $principal = New-ScheduledTaskPrincipal -UserId "SYSTEM" -LogonType ServiceAccount -RunLevel Highest
    $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
        -ExecutionTimeLimit (New-TimeSpan -Minutes 5) -MultipleInstances Queue
    function New-FeedAction([string]$Event) {
        New-ScheduledTaskAction -Execute "powershell.exe" -Argument ("-NoProfile -NonInteractive " +
            "-ExecutionPolicy Bypass -File `"$script`" -Event $Event -Gateway $Gateway")
    }
    # Logon: any user's logon on this PC.
    Register-ScheduledTask -TaskPath "\schoolproxy\" -TaskName "logon feed - logon" -Force `
        -Action (New-FeedAction "logon") -Trigger (New-ScheduledTaskTrigger -AtLogOn) `
        -Principal $principal -Settings $settings | Out-Null
    # Logoff: Windows has no logoff trigger; Winlogon writes event 7002 to the System log at each logoff.
    $class = Get-CimClass -ClassName MSFT_TaskEventTrigger -Namespace Root/Microsoft/Windows/TaskScheduler
    $logoff = New-CimInstance -CimClass $class -ClientOnly
    $logoff.Enabled = $true
    $logoff.Subscription = '<QueryList><Query Id="0" Path="System"><Select Path="System">' +
        "*[System[Provider[@Name='Microsoft-Windows-Winlogon'] and EventID=7002]]</Select></Query></QueryList>"
    Register-ScheduledTask -TaskPath "\schoolproxy\" -TaskName "logon feed - logoff" -Force `
        -Action (New-FeedAction "logoff") -Trigger $logoff -Principal $principal -Settings $settings | Out-Null
} catch {
    Write-EventLog -LogName Application -Source "Application" -EventId 9464 -EntryType Error `
        -Message "schoolproxy logon feed: set-up failed: $($_.Exception.Message)" -ErrorAction SilentlyContinue
    throw
}
