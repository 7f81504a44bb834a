"""Anonymised copies of a series or study: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile.

``anonymize(sources, out_dir)`` reads DICOM files (or datasets), applies the Basic Profile to a copy of each and
writes the copies into the new folder ``out_dir``, one sub-folder per series (``S001/IM0001.dcm`` ...; original
file names are not reused, since they often carry the patient's name). The originals are only read.

What the profile does here
    Every attribute of PS3.15 Table E.1-1 (DICOM 2026c; :data:`BASIC_PROFILE`) gets the action of the table's Basic
    Profile column, at every depth of every sequence: X removes, Z empties, D puts a dummy value of the same VR, U
    replaces a UID. The table's combined actions depend on the attribute's type in the IOD ("X unless Z or D is
    required"); without the IOD's type tables this module takes the one that keeps every IOD valid, and an empty or
    dummy value keeps no information either: X/Z becomes Z; X/D, X/Z/D and Z/D become D (an empty value stays
    empty); X/Z/U* keeps the sequence with its UIDs replaced. A D on a sequence keeps its items and replaces every
    text, date and name inside them with dummies. Overlay Data (X) takes its whole overlay group with it, so no
    overlay is left half-described; Curve Data groups go whole. All private attributes go (no Retain Safe Private
    Option), and so do stale group lengths and the file preamble.

    Patient's Name becomes ``patient_name`` ("ANONYMOUS") and Patient ID ``patient_id`` or, by default, a pseudonym
    ``ANON`` + 12 hex digits made from the original ID and ``salt``. Patient Identity Removed is set to YES,
    De-identification Method and its Code Sequence (DCM 113100, Basic Application Confidentiality Profile) are
    added, and Longitudinal Temporal Information Modified is REMOVED.

UIDs
    Every instance UID is replaced: those of Table E.1-1 and any other UID value except the ones that name a kind of
    thing, which stay: well-known UIDs (pydicom's list: SOP Classes, Transfer Syntaxes, coding schemes ...) and the
    values of ``...ClassUID``, Transfer Syntax and Coding Scheme UID attributes. The new UID is
    ``pydicom.uid.generate_uid`` under pydicom's root, from a hash of a salt and the original UID, and one original
    UID gets one new UID across the whole export, so references between the files (Referenced SOP Instance UID,
    Study/Series/Frame of Reference UIDs, Media Storage SOP Instance UID in the file meta) stay intact. Without
    ``salt`` a random one is drawn for each export; passing the same (secret) salt again gives the same UIDs and
    patient pseudonym, e.g. to add a series to a study anonymised earlier.

Dates
    As the Basic Profile says, without the Retain Longitudinal Temporal Information options: Study Date/Time,
    Patient's Birth Date and the like are emptied (Z), many are removed (X), and the few the profile marks D (or
    that resolve to D above: Series, Content and Acquisition DateTime, Instance Creation ...) get the dummy date
    19000101 / time 000000. Patient's Age, Size and Weight are removed. Nothing is shifted.

Not done
    Pixel data is never changed (no Clean Pixel Data Option): a file whose Burned In Annotation is YES, or that
    lacks the attribute in a modality where text is commonly burned in (US, XA, RF, ES, secondary captures ...),
    gets a warning line in the result. CT and MR without the attribute do not.

Why no library
    dicognito pseudonymises (realistic fake names, dates shifted) but keeps private attributes and most of the
    table's free-text attributes, so it is not the Basic Profile. deid ships a site recipe, not Table E.1-1, that
    removes every UID and every ``...ID`` attribute, which breaks the IOD and the references (and it pulls in
    matplotlib). dicom-anonymizer carries the table but applies it at the top level only and empties the UIDs inside
    Referenced Image Sequence (references lost, Type 1 attributes empty), keeps its UID map in a module-level global
    and prints to stdout. idiscore's releases that run on Python 3.11 pin Pillow < 11 (the project has a newer one),
    later ones need Python 3.12. GDCM's profile (already a dependency) holds the 2008 table of 48 attributes and
    refuses to run without an encryption certificate. So the table lives here as data, and pydicom does the reading,
    walking and writing.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
    generate_uid,
)

from medviewer.core.errors import Cancelled, CancelToken, ProgressCallback, is_cancelled
from medviewer.core.safe import ExportError, write_folder
from medviewer.core.sources import Refused, Source, iter_sources
from medviewer.version import __version__

__all__ = ["BASIC_PROFILE", "AnonymizeResult", "anonymize"]

# PS3.15 Table E.1-1 (DICOM 2026c), Basic Profile column: action -> attribute keywords. Attributes newer than
# pydicom's data dictionary are given as tags: (0008,1301-1304) Principal/Primary/Secondary/Histological
# Diagnoses Code Sequences, (0010,0011-0016) Person Names to Use Sequence, Name to Use (Comment), Third Person
# Pronouns Sequence, Pronoun Code Sequence, Pronoun Comment, (0010,0041-0047) Gender Identity and Sex
# Parameters for Clinical Use attributes, (0010,2162) Ethnic Groups, (0040,A034/A035) Effective Start/Stop
# DateTime, (0040,B034/B036/B03B/B03F) Annotation DateTime, Segment Definition DateTime, Montage Name, Montage
# Channel Label, (0040,E012) Display URI. Repeating groups (Curve Data 50xx, Overlay Data and Comments 60xx)
# are handled in _action_for.
_TABLE_E1_1: dict[str, str] = {
    "X": """
        AcquisitionComments AcquisitionContextDescription AcquisitionProtocolDescription
        ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate
        AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime AffectedSOPInstanceUID
        Allergies AnnotationGroupDescription ApprovalStatusDateTime Arbitrary AssertionExpirationDateTime
        AuthorObserverSequence BeamDescription BolusDescription BranchOfService CalibrationDate CalibrationTime
        CameraOwnerName CassetteID CertifiedTimestamp ChannelDerivationDescription ChannelLabel
        ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription ClinicalTrialSeriesID
        ClinicalTrialTimePointDescription CommentsOnRadiationDose CommentsOnThePerformedProcedureStep
        CompensatorDescription ConfidentialityConstraintOnPatientDataDescription
        ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription
        ContentCreatorIdentificationCodeSequence ContrastBolusStartTime ContrastBolusStopTime
        ContributionDateTime ContributionDescription CountryOfResidence CreationDate CreationTime
        CurrentObserverTrial CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence
        DataSetTrailingPadding DateOfDocumentOrVerbalTransactionTrial DateOfInstallation DateOfLastCalibration
        DateOfManufacture DateOfSecondaryCapture DateTimeOfLastCalibration DecompositionDescription
        DerivationDescription DeviceDescription DeviceSettingDescription DigitalSignaturesSequence DischargeDate
        DischargeDiagnosisDescription DischargeTime DisplacementReferenceLabel DistributionAddress
        DistributionName DoseReferenceDescription EntityDescription EntityName
        EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
        EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup EthnicGroupCodeSequence
        ExpectedCompletionDateTime FilterLookupTableDescription FindingsGroupRecordingDateTrial
        FindingsGroupRecordingTimeTrial FixationDeviceDescription FractionGroupDescription FrameComments
        GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef
        GPSDestDistance GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude
        GPSDestLongitudeRef GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef
        GPSLongitude GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed
        GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID
        HL7DocumentEffectiveTime HardcopyCreationDeviceID HumanPerformerName HumanPerformerOrganization
        IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
        ImagingServiceRequestComments Impressions InstanceCoercionDateTime InstanceOriginStatus
        InstitutionAddress InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
        InsurancePlanIdentification IntendedFractionStartTime IntendedRecipientsOfResultsIdentificationSequence
        InterpretationApprovalDate InterpretationApprovalTime InterpretationApproverSequence
        InterpretationAuthor InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer
        InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder InterpretationText
        InterpretationTranscriber InterpretationTranscriptionDate InterpretationTranscriptionTime
        InterventionDrugStartTime InterventionDrugStopTime IssueDateOfImagingServiceRequest
        IssueTimeOfImagingServiceRequest IssuerOfAdmissionID IssuerOfAdmissionIDSequence
        IssuerOfClinicalTrialProtocolID IssuerOfClinicalTrialSeriesID IssuerOfClinicalTrialSiteID
        IssuerOfClinicalTrialSubjectID IssuerOfClinicalTrialSubjectReadingID IssuerOfClinicalTrialTimePointID
        IssuerOfPatientID IssuerOfServiceEpisodeID IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake
        LensModel LensSerialNumber LensSpecification LongDeviceDescription MAC MakerNote MedicalAlerts
        MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDate ModifiedImageDescription
        ModifiedImageTime ModifyingDeviceID MultienergyAcquisitionDescription MultiplexGroupLabel
        NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
        NonconformingModifiedAttributesSequence ObservationDateTrial ObservationStartDateTime
        ObservationTimeTrial Occupation OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy
        OrderEntererLocation OriginalAttributesSequence Originator OtherClinicalTrialProtocolIDsSequence
        OtherPatientIDs OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence
        PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
        PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
        PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSetupPhotoDescription
        PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
        PatientTreatmentPreparationMethodDescription PatientTreatmentPreparationProcedureParameterDescription
        PatientWeight PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
        PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
        PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime
        PerformedStationAETitle PerformedStationGeographicLocationCodeSequence PerformedStationName
        PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence PerformingPhysicianName
        PersonAddress PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
        PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
        PlateID PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication
        PregnancyStatus PrescriptionDescription PresentationCreationDate PresentationCreationTime
        PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProductExpirationDateTime
        PyramidDescription PyramidLabel ROICreatorSequence ROIDateTime ROIDescription ROIGenerationDescription
        ROIInterpreterSequence ROIObservationDateTime ROIObservationDescription ROIObservationLabel
        RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime RadiopharmaceuticalStartTime
        RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime ReasonForOmissionDescription
        ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheImagingServiceRequest
        ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence ReceivingAE
        ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
        ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
        ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
        RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureID
        RequestedProcedureLocation RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
        RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson
        ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer RetrieveAETitle
        SOPAuthorizationDateTime ScheduledAdmissionDate ScheduledAdmissionTime ScheduledDischargeDate
        ScheduledDischargeTime ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
        ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
        ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
        ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID ScheduledProcedureStepLocation
        ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
        ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
        ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
        ScheduledStudyLocation ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
        ScheduledStudyStopDate ScheduledStudyStopTime SecondaryCaptureDeviceID SeriesDescription
        ServiceEpisodeDescription ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription
        SlideIdentifier SmokingStatus SourceManufacturer SpecialNeeds SpecimenAccessionNumber
        SpecimenDetailedDescription SpecimenShortDescription StationAETitle StructureSetDescription
        StructureSetName StudyArrivalDate StudyArrivalTime StudyComments StudyCompletionDate StudyCompletionTime
        StudyDescription StudyIDIssuer StudyReadDate StudyReadTime StudyVerifiedDate StudyVerifiedTime
        SubstanceAdministrationDateTime TelephoneNumberTrial TemplateLocalVersion TemplateVersion TextComments
        TextString TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration TimeOfSecondaryCapture
        TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle TransducerIdentificationSequence
        TreatmentSites UDISequence UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial
        VerbalSourceTrial VisitComments WaveformFilterDescription XRayDetectorLabel 00081301 00081302 00081303
        00081304 00100011 00100012 00100013 00100014 00100015 00100016 00100041 00100042 00100043 00100044
        00100045 00100046 00100047 00102162 0040A034 0040A035 0040B034 0040B036 0040B03B 0040B03F 0040E012
    """,
    "Z": """
        AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
        ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
        ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
        DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
        IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
        ManufacturerDeviceIdentifier ParticipationDateTime PatientBirthDate PatientName PatientSex
        PlacerOrderNumberImagingServiceRequest PrescriptionNotes PrescriptionNotesSequence ROIInterpreter
        ROIName RTAccessoryDeviceSlotID RTAccessoryHolderSlotID RTPhysicianIntentNarrative
        RadiationGenerationModeDescription ReasonForSuperseding ReferringPhysicianName ReviewDate ReviewTime
        SourceOfPreviousValues SpecimenPreparationSequence StructureSetDate StructureSetTime StudyDate StudyID
        StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "D": """
        AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID AssertionDateTime
        AttributeModificationDateTime BeamHoldTransitionDateTime CertificateOfSigner
        ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
        ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
        ContextGroupLocalVersion ContextGroupVersion Date DateTime DecayCorrectionDateTime DestinationAE
        DeviceLabel DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument EntityLabel EntityLongLabel
        ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence FrameAcquisitionDateTime
        FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse GraphicAnnotationSequence
        HangingProtocolCreationDateTime ImpedanceMeasurementDateTime InformationIssueDateTime InterlockDateTime
        InterlockDescription InterlockOriginDescription ModifyingSystem OverrideDateTime
        PersonIdentificationCodeSequence PersonName RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel
        RadiationDoseIdentificationLabel RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
        ReasonForTheAttributeModification RecordedRTControlPointDateTime ReferencedDateTime SafePositionExitDate
        SafePositionExitTime SafePositionReturnDate SafePositionReturnTime SelectorAEValue SelectorASValue
        SelectorDAValue SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue
        SelectorSHValue SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue
        SourceEndDateTime SourceIdentifier SourceStartDateTime SourceStrengthReferenceDate
        SourceStrengthReferenceTime SpecimenIdentifier StructureSetLabel Time TreatmentControlPointDate
        TreatmentControlPointTime TreatmentPositionGroupLabel TreatmentToleranceViolationDateTime
        TreatmentToleranceViolationDescription UnformattedTextValue UserContentLabel UserContentLongLabel
        VerificationDateTime VerifyingObserverName VerifyingObserverSequence VerifyingOrganization
        XRayDetectorID XRaySourceID
    """,
    "U": """
        AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
        DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
        FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID IrradiationEventUID
        LargePaletteColorLookupTableUID ManufacturerDeviceClassUID MediaStorageSOPInstanceUID MultiplexGroupUID
        ObservationSubjectUIDTrial ObservationUID PaletteColorLookupTableUID PatientSetupUID
        PresentationDisplayCollectionUID PresentationSequenceCollectionUID PyramidUID RTTreatmentPhaseUID
        ReferencedConceptualVolumeUID ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID
        ReferencedFiducialsUID ReferencedFrameOfReferenceUID
        ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedObservationUIDTrial
        ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
        RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
        SourceConceptualVolumeUID SourceFrameOfReferenceUID SpecimenUID StorageMediaFileSetUID StudyInstanceUID
        SynchronizationFrameOfReferenceUID TableTopPositionAlignmentUID TargetUID TemplateExtensionCreatorUID
        TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
        TreatmentSessionUID UID
    """,
    "X/Z": """
        AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText PatientSexNeutered
        ReferencedStudySequence RequestedProcedureDescription ReviewerName SourceSerialNumber
        TreatmentMachineName
    """,
    "X/D": """
        AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID EndAcquisitionDateTime
        FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate IntendedPhaseStartDate
        MostRecentTreatmentDate ObservationDateTime OperatorIdentificationSequence ProtocolName RTPlanDate
        RTPlanTime RTTreatmentApproachLabel SeriesDate SeriesTime StartAcquisitionDateTime
        TimeOfLastDetectorCalibration TreatmentDate TreatmentSite TreatmentTime WaveformAnnotationSequence
    """,
    "X/Z/D": """
        AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence InstitutionName
        OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "Z/D": """
        ContentCreatorName ContentDate ContentTime ContrastBolusAgent InstructionPerformedDateTime PatientID
    """,
    "X/Z/U*": """
        ReferencedImageSequence SourceImageSequence
    """,
}

# How each of the table's actions is carried out (see the module docstring): "U*" keeps a sequence and
# replaces the UIDs inside it.
_RESOLVED = {"X": "X", "Z": "Z", "D": "D", "U": "U", "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D",
             "X/Z/U*": "U*"}


def _tag(token: str) -> int:
    if re.fullmatch(r"[0-9A-F]{8}", token):
        return int(token, 16)
    tag = tag_for_keyword(token)
    if tag is None:
        raise KeyError(f"Table E.1-1 keyword {token!r} is not in pydicom's data dictionary")
    return tag


#: PS3.15 Table E.1-1, Basic Profile column, by tag: the action code as the table writes it.
BASIC_PROFILE: Mapping[int, str] = {
    _tag(token): action for action, tokens in _TABLE_E1_1.items() for token in tokens.split()
}

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR = {
    "AE": _DUMMY_TEXT, "AS": "000Y", "CS": _DUMMY_TEXT, "DA": "19000101", "DT": "19000101000000",
    "LO": _DUMMY_TEXT, "LT": _DUMMY_TEXT, "PN": _DUMMY_TEXT, "SH": _DUMMY_TEXT, "ST": _DUMMY_TEXT,
    "TM": "000000", "UC": _DUMMY_TEXT, "UT": _DUMMY_TEXT, "UR": "", "DS": "0", "IS": "0",
}
_NUMERIC_VRS = {"FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT"}
# Inside a sequence that the table marks D these values become dummies; numbers, code strings and the
# codes of nested code sequences stay, and UIDs are replaced as everywhere.
_TEXT_VRS = {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT", "UR"}
_CODE_KEYWORDS = {"CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator", "CodingSchemeVersion",
                  "CodeMeaning", "ContextIdentifier", "MappingResource", "MappingResourceName"}
# UIDs that name a kind of thing, not an instance: kept.
_CLASS_UID_KEYWORD = re.compile(r"ClassUID|TransferSyntaxUID|CodingSchemeUID|MappingResourceUID|"
                                r"ContextGroupExtensionCreatorUID")
# File meta attributes that name the sending and receiving systems or carry private information.
_META_DROPPED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)

# Where text is commonly burned into the pixels: without a Burned In Annotation attribute these warn.
_TEXT_PRONE_MODALITIES = {"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OP", "OT", "SC"}
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

_METHOD = f"Basic Application Confidentiality Profile (MedViewer {__version__})"[:64]
_METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")


@dataclass
class AnonymizeResult:
    """What :func:`anonymize` wrote, and what it could not."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    uid_count: int = 0  # original UIDs that got a new one
    warnings: list[str] = field(default_factory=list)  # one line each, naming the file
    refused: list[Refused] = field(default_factory=list)  # files not anonymised, each with its reason


class _Refuse(Exception):
    """A source that cannot be anonymised; ``str()`` is the reason."""


class _Pseudonyms:
    """Consistent replacements for one export: the same original always gets the same new value."""

    def __init__(self, salt: str, patient_name: str, patient_id: str | None):
        self.salt = salt
        self.patient_name = patient_name
        self.patient_id = patient_id
        self.uids: dict[str, str] = {}

    def uid(self, original: str) -> str:
        original = str(original).strip().rstrip("\0")
        if not original:
            return original
        new = self.uids.get(original)
        if new is None:
            new = self.uids[original] = str(generate_uid(entropy_srcs=[self.salt, "\0uid\0", original]))
        return new

    def pseudonym_id(self, original: str) -> str:
        if self.patient_id is not None:
            return self.patient_id
        digest = hashlib.sha256(f"{self.salt}\0patient\0{original}".encode()).hexdigest()
        return "ANON" + digest[:12].upper()


def _action_for(tag: BaseTag) -> str | None:
    """The table's action for ``tag`` resolved as described in the module docstring, "overlay" for
    Overlay Data (the whole overlay goes), None where the table says nothing (keep)."""
    action = BASIC_PROFILE.get(tag)
    if action is not None:
        return _RESOLVED[action]
    group, element = tag.group, tag.element
    if 0x5000 <= group <= 0x501E and not group & 1:
        return "X"  # Curve Data (50xx,xxxx)
    if 0x6000 <= group <= 0x601E and not group & 1:
        if element == 0x3000:
            return "overlay"  # Overlay Data (60xx,3000)
        if element == 0x4000:
            return "X"  # Overlay Comments (60xx,4000)
    return None


def _keeps_uid(tag: BaseTag, value: str) -> bool:
    if str(value) in UID_dictionary:
        return True
    return bool(_CLASS_UID_KEYWORD.search(keyword_for_tag(tag) or ""))


def _map_uids(elem: DataElement, names: _Pseudonyms, *, keep_classes: bool) -> None:
    values = list(elem.value) if isinstance(elem.value, MultiValue | list) else [elem.value]
    new = [v if v is None or (keep_classes and _keeps_uid(elem.tag, v)) else names.uid(v) for v in values]
    elem.value = new if len(new) > 1 else new[0] if new else elem.value


def _empty(elem: DataElement) -> None:
    elem.value = Sequence() if elem.VR == "SQ" else None


def _dummy(elem: DataElement) -> None:
    if elem.value is None or elem.value == "" or elem.VR == "UI":
        return  # an empty value stays empty; UIDs are replaced separately
    if elem.VR in _DUMMY_BY_VR:
        elem.value = _DUMMY_BY_VR[elem.VR]
    elif elem.VR in _NUMERIC_VRS:
        elem.value = 0
    else:
        elem.value = b""  # binary (OB, OW, UN ...): no dummy carries meaning


def _dummy_texts(ds: Dataset, in_code: bool = False) -> None:
    """Dummies for the texts, dates and names of an item of a sequence the table marks D. The codes of the
    code sequences inside it stay (PS3.15 E.1.1 note: coded entries do not identify), except where the table
    names the code sequence itself."""
    for elem in ds:
        if elem.VR == "SQ":
            code = elem.keyword.endswith("CodeSequence") and elem.tag not in BASIC_PROFILE
            for item in elem.value or ():
                _dummy_texts(item, code)
        elif elem.VR in _TEXT_VRS and not (in_code and elem.keyword in _CODE_KEYWORDS):
            _dummy(elem)


def _clean(ds: Dataset, names: _Pseudonyms) -> None:
    """Apply the profile to ``ds`` and, recursively, to every item of its sequences."""
    for raw_tag in list(ds.keys()):
        tag = Tag(raw_tag)
        if tag not in ds:
            continue  # went with its overlay group
        if tag.element == 0 and tag.group != 0x0002:
            del ds[tag]  # group lengths are wrong once attributes are removed
            continue
        if tag == _PATIENT_NAME:
            ds[tag].value = names.patient_name
            continue
        if tag == _PATIENT_ID:
            ds[tag].value = names.pseudonym_id(str(ds[tag].value or ""))
            continue
        action = _action_for(tag)
        if action == "X":
            del ds[tag]
            continue
        if action == "overlay":
            for other in [t for t in ds.keys() if Tag(t).group == tag.group]:
                del ds[other]
            continue
        elem = ds[tag]
        if action == "Z":
            _empty(elem)
        elif action == "U":
            if elem.VR == "UI":
                _map_uids(elem, names, keep_classes=False)
            else:
                del ds[tag]  # a UID not stored as one cannot be replaced
        elif action == "D" and elem.VR != "SQ":
            _dummy(elem)
        elif elem.VR == "SQ":  # kept (K or U*) or D: the items are cleaned, D also gets dummy texts
            for item in elem.value or ():
                _clean(item, names)
                if action == "D":
                    _dummy_texts(item)
        elif elem.VR == "UI" and elem.value:
            _map_uids(elem, names, keep_classes=True)


def _add_markers(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    methods = ds.get("DeidentificationMethod") or []
    methods = [methods] if isinstance(methods, str) else [str(m) for m in methods]
    if _METHOD not in methods:
        methods.append(_METHOD)
    ds.DeidentificationMethod = methods if len(methods) > 1 else methods[0]
    codes = ds.get("DeidentificationMethodCodeSequence") or Sequence()
    if not any(item.get("CodeValue") == _METHOD_CODE[0] and item.get("CodingSchemeDesignator") == _METHOD_CODE[1]
               for item in codes):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = _METHOD_CODE
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def _clean_meta(ds: Dataset, names: _Pseudonyms) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    for tag in _META_DROPPED:
        if tag in meta:
            del meta[tag]
    if "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian)
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # already replaced
    elif "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = names.uid(meta.MediaStorageSOPInstanceUID)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDVIEWER_{__version__}"[:16]


def _anonymize_dataset(ds: Dataset, names: _Pseudonyms) -> Dataset:
    """Apply the Basic Profile to ``ds`` in place (file meta included) and return it."""
    for tag in [t for t in ds.keys() if Tag(t).group == 0x0002]:
        del ds[tag]  # file meta attributes misplaced in the data set
    ds.remove_private_tags()
    _clean(ds, names)
    _add_markers(ds)
    _clean_meta(ds, names)
    ds.preamble = b"\0" * 128  # a preamble may hold anything (TIFF headers, names)
    return ds


def _read(source: Path | Source) -> Dataset:
    def load(force: bool) -> Dataset:
        if isinstance(source, Source):  # a file, or a member of a ZIP archive
            with source.open() as fp:
                return pydicom.dcmread(fp, force=force)
        return pydicom.dcmread(source, force=force)

    try:
        try:
            ds = load(force=False)
        except InvalidDicomError:
            try:
                ds = load(force=True)  # older files without preamble or file meta
            except Exception:
                raise _Refuse("not a DICOM file") from None
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                raise _Refuse("not a DICOM file") from None
    except PermissionError:
        raise _Refuse("cannot be read: permission denied") from None
    except FileNotFoundError:
        raise _Refuse("no such file") from None
    except IsADirectoryError:
        raise _Refuse("is a folder") from None
    except OSError as exc:
        raise _Refuse(f"cannot be read: {exc.strerror or exc}") from None
    except _Refuse:
        raise
    except Exception as exc:
        raise _Refuse(f"damaged DICOM file ({_short(exc)})") from None
    return ds


def _check_instance(ds: Dataset) -> None:
    meta_class = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    if str(meta_class or "") == _DICOMDIR_CLASS:
        raise _Refuse("DICOMDIR index, not an image (give its folder instead)")
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise _Refuse(f"not a DICOM instance (no {keyword})")


def _check_pixels(ds: Dataset) -> None:
    """Refuse a file that ends before or inside its pixel data (pydicom reads such files without complaint)."""
    if "Rows" not in ds or "Columns" not in ds:
        return
    pixels = next((ds[k] for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
    if pixels is None:
        raise _Refuse("truncated or incomplete: the file ends before its pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or syntax.is_encapsulated or not isinstance(pixels.value, bytes):
        return
    try:
        bits = {"PixelData": int(ds.get("BitsAllocated") or 0), "FloatPixelData": 32}.get(pixels.keyword, 64)
        samples = int(ds.get("SamplesPerPixel") or 1)
        if samples == 3 and str(ds.get("PhotometricInterpretation") or "") == "YBR_FULL_422":
            samples = 2  # 4:2:2 subsampled
        count = int(ds.Rows) * int(ds.Columns) * samples * int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return
    if len(pixels.value) < (count * bits + 7) // 8:
        raise _Refuse("truncated: the pixel data is shorter than the header says")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _burned_in_warning(ds: Dataset) -> str | None:
    value = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if value == "YES":
        return "Burned In Annotation is YES: the pixels show text that may identify the patient (not removed)"
    if value or not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    modality = str(ds.get("Modality") or "").strip().upper()
    secondary = str(ds.get("SOPClassUID") or "").startswith(_SECONDARY_CAPTURE_PREFIX)
    if modality in _TEXT_PRONE_MODALITIES or secondary:
        kind = "secondary capture" if secondary else f"{modality} image"
        return f"{kind} without Burned In Annotation: check the pixels for burned-in text before sharing"
    return None


def _expand(sources) -> list[Source | Dataset | Refused]:
    """Datasets and sources as given; paths through the scanner's own expansion (folders, ZIP archives, DICOMDIR;
    hidden and system files skipped; unreachable paths as :class:`Refused`)."""
    if isinstance(sources, str | os.PathLike | Source | Dataset):
        sources = [sources]
    items: list[Source | Dataset | Refused] = []
    for source in sources:
        items.extend([source] if isinstance(source, Source | Dataset) else iter_sources([source]))
    return items


def _label(source: Path | Source | Dataset, index: int) -> str:
    if isinstance(source, Dataset):
        return str(getattr(source, "filename", None) or f"dataset {index + 1}")
    return source.name if isinstance(source, Source) else str(source)


def anonymize(
    sources: str | os.PathLike | Source | Dataset | Iterable[str | os.PathLike | Source | Dataset],
    out_dir: str | os.PathLike,
    *,
    patient_name: str = "ANONYMOUS",
    patient_id: str | None = None,
    salt: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> AnonymizeResult:
    """Write an anonymised copy of the DICOM files ``sources`` into the new folder ``out_dir``:
    ``S001/IM0001.dcm`` ..., one folder per series.

    ``sources`` are paths of files or folders, :class:`~medviewer.core.sources.Source` objects (``instance.source``
    of each instance of a scanned series, ZIP members included) or pydicom datasets (copied, not changed).

    ``patient_name`` and ``patient_id`` replace the patient's name and ID (by default the ID is a pseudonym
    derived from the original ID and ``salt``); ``salt`` (keep it secret) makes the new UIDs and the pseudonym
    repeatable, see the module docstring. Files that cannot be read or are not DICOM instances are listed in
    ``refused`` and skipped; if none is left, :class:`ExportError` is raised and nothing is written. An existing
    ``out_dir`` is replaced only with ``force``; on any failure nothing is left behind. ``progress(done,
    total)`` counts files; ``cancel`` stops between files with :class:`Cancelled`.
    """
    items = _expand(sources)
    target = Path(out_dir)
    names = _Pseudonyms(salt if salt is not None else secrets.token_hex(16), patient_name, patient_id)
    result = AnonymizeResult(folder=target)

    def fill(staging: Path) -> None:
        series_dirs: dict[str, str] = {}
        counts: dict[str, int] = {}
        seen: dict[str, str] = {}
        total = len(items)
        if progress:
            progress(0, total)
        for index, source in enumerate(items):
            if is_cancelled(cancel):
                raise Cancelled("anonymisation cancelled")
            if isinstance(source, Refused):
                result.refused.append(source)
                if progress:
                    progress(index + 1, total)
                continue
            label = _label(source, index)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = copy.deepcopy(source) if isinstance(source, Dataset) else _read(source)
                    _check_instance(ds)
                    _check_pixels(ds)
                    original_uid = str(ds.SOPInstanceUID)
                    if original_uid in seen:
                        raise _Refuse(f"same SOP Instance UID as {seen[original_uid]}, skipped")
                    warning = _burned_in_warning(ds)
                    try:
                        _anonymize_dataset(ds, names)
                    except Exception as exc:
                        raise _Refuse(f"could not be anonymised ({_short(exc)})") from None
                    series = str(ds.get("SeriesInstanceUID") or "")
                    folder = series_dirs.setdefault(series, f"S{len(series_dirs) + 1:03d}")
                    counts[folder] = counts.get(folder, 0) + 1
                    relative = Path(folder, f"IM{counts[folder]:04d}.dcm")
                    path = staging / relative
                    path.parent.mkdir(exist_ok=True)
                    try:
                        ds.save_as(path, enforce_file_format=True)
                    except OSError:
                        raise
                    except Exception as exc:
                        path.unlink(missing_ok=True)
                        counts[folder] -= 1
                        raise _Refuse(f"could not be written ({_short(exc)})") from None
            except _Refuse as exc:
                result.refused.append(Refused(label, str(exc)))
            else:
                seen[original_uid] = label
                result.files.append(target / relative)
                if warning:
                    result.warnings.append(f"{label}: {warning} (written as {relative.as_posix()})")
            if progress:
                progress(index + 1, total)
        if not result.files:
            reason = "nothing could be anonymised"
            if result.refused:
                reason += f" ({len(result.refused)} file(s) refused; first: {result.refused[0]})"
            elif not items:
                reason += " (no files given)"
            raise ExportError(str(target), reason)

    write_folder(target, fill, force=force)
    result.uid_count = len(names.uids)
    return result
